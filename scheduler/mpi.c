/* mpi.c: MPI start-up, checked sends and polled receives of scheduler
 * messages. */
#include "scheduler/mpi.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Fills err with the MPI call and the library's description of code. */
static int mpi_fail(rc_error *err, const char *call, int code)
{
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "error code %d", code);
    return rc_fail(err, "%s failed: %s", call, text);
}

int sched_mpi_launched(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

int sched_mpi_init(int *argc, char ***argv, int *rank, int *size, rc_error *err)
{
    int provided = 0, rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS)
        return rc_fail(err, "MPI_Init_thread failed with code %d", rc);
    if ((rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN)) != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Comm_set_errhandler", rc);
    if (provided < MPI_THREAD_FUNNELED)
        return rc_fail(err, "the MPI library provides thread level %d, below MPI_THREAD_FUNNELED", provided);
    if ((rc = MPI_Comm_rank(MPI_COMM_WORLD, rank)) != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Comm_rank", rc);
    if ((rc = MPI_Comm_size(MPI_COMM_WORLD, size)) != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Comm_size", rc);
    return 0;
}

int sched_mpi_finalize(rc_error *err)
{
    int rc = MPI_Finalize();
    return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "MPI_Finalize", rc);
}

void sched_mpi_abort(int status) { MPI_Abort(MPI_COMM_WORLD, status); }

void sched_mpi_pause(void)
{
    const struct timespec pause = {0, 1000000};
    nanosleep(&pause, NULL);
}

int sched_mpi_send(int dest, const sched_msg *msg, sched_buf *scratch, rc_error *err)
{
    if (sched_encode(msg, scratch, err) < 0)
        return -1;
    if (scratch->len > (size_t)INT32_MAX)
        return rc_fail(err, "a %s message of %zu bytes is too large to send", sched_msg_kind_name(msg->kind),
                       scratch->len);
    int rc = MPI_Send(scratch->data, (int)scratch->len, MPI_BYTE, dest, (int)msg->kind, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Send", rc), rc_prefix(err, "sending a %s message to rank %d",
                                                        sched_msg_kind_name(msg->kind), dest);
    return 0;
}

int sched_mpi_poll(int source, sched_msg *msg, int *from, sched_buf *scratch, rc_error *err)
{
    int flag = 0, rc;
    MPI_Status status;
    if ((rc = MPI_Iprobe(source < 0 ? MPI_ANY_SOURCE : source, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &status)) !=
        MPI_SUCCESS)
        return mpi_fail(err, "MPI_Iprobe", rc);
    if (!flag)
        return 0;
    int count = 0;
    if ((rc = MPI_Get_count(&status, MPI_BYTE, &count)) != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Get_count", rc);
    if (count < 0 || (size_t)count > scratch->cap) {
        unsigned char *grown = realloc(scratch->data, count > 0 ? (size_t)count : 1);
        if (!grown)
            return rc_fail(err, "out of memory receiving a message of %d bytes from rank %d", count,
                           status.MPI_SOURCE);
        scratch->data = grown;
        scratch->cap = count > 0 ? (size_t)count : 1;
    }
    if ((rc = MPI_Recv(scratch->data, count, MPI_BYTE, status.MPI_SOURCE, status.MPI_TAG, MPI_COMM_WORLD,
                       MPI_STATUS_IGNORE)) != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Recv", rc), rc_prefix(err, "receiving from rank %d", status.MPI_SOURCE);
    scratch->len = (size_t)count;
    *from = status.MPI_SOURCE;
    if (sched_decode(scratch->data, scratch->len, msg, err) < 0) {
        sched_msg_free(msg);
        return rc_prefix(err, "rank %d sent a bad message", status.MPI_SOURCE);
    }
    if ((int)msg->kind != status.MPI_TAG) {
        sched_msg_free(msg);
        return rc_fail(err, "rank %d sent a %s message with the tag of another kind (%d)", status.MPI_SOURCE,
                       sched_msg_kind_name(msg->kind), status.MPI_TAG);
    }
    return 1;
}

/* ---- non-blocking sends ------------------------------------------------- */

typedef struct pending_send {
    MPI_Request request;
    sched_buf bytes; // kept until the send completes
} pending_send;

struct sched_outbox {
    pending_send *sends; // (n) in flight
    int n, cap;
};

sched_outbox *sched_outbox_new(rc_error *err)
{
    sched_outbox *box = calloc(1, sizeof *box);
    if (!box)
        rc_fail(err, "out of memory for the outgoing messages");
    return box;
}

int sched_outbox_send(sched_outbox *box, int dest, const sched_msg *msg, rc_error *err)
{
    if (box->n == box->cap) {
        int cap = box->cap ? 2 * box->cap : 16;
        pending_send *grown = realloc(box->sends, sizeof *grown * (size_t)cap);
        if (!grown)
            return rc_fail(err, "out of memory for the outgoing messages");
        box->sends = grown;
        box->cap = cap;
    }
    pending_send *p = &box->sends[box->n];
    memset(p, 0, sizeof *p);
    if (sched_encode(msg, &p->bytes, err) < 0) {
        sched_buf_free(&p->bytes);
        return -1;
    }
    int rc = MPI_Isend(p->bytes.data, (int)p->bytes.len, MPI_BYTE, dest, (int)msg->kind, MPI_COMM_WORLD,
                       &p->request);
    if (rc != MPI_SUCCESS) {
        sched_buf_free(&p->bytes);
        return mpi_fail(err, "MPI_Isend", rc), rc_prefix(err, "sending a %s message to rank %d",
                                                         sched_msg_kind_name(msg->kind), dest);
    }
    box->n++;
    return 0;
}

int sched_outbox_progress(sched_outbox *box, rc_error *err)
{
    int kept = 0;
    for (int i = 0; i < box->n; i++) {
        int done = 0, rc = MPI_Test(&box->sends[i].request, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return mpi_fail(err, "MPI_Test", rc);
        if (done)
            sched_buf_free(&box->sends[i].bytes);
        else
            box->sends[kept++] = box->sends[i];
    }
    box->n = kept;
    return kept;
}

int sched_outbox_close(sched_outbox *box, int abandon, rc_error *err)
{
    if (!box)
        return 0;
    int status = 0;
    while (!abandon && box->n > 0) {
        if (sched_outbox_progress(box, err) < 0) {
            status = -1;
            break;
        }
        if (box->n > 0)
            sched_mpi_pause();
    }
    for (int i = 0; i < box->n; i++)
        sched_buf_free(&box->sends[i].bytes);
    free(box->sends);
    free(box);
    return status;
}

int sched_mpi_gather_hosts(int rank, int size, char ***hosts, rc_error *err)
{
    *hosts = NULL;
    char name[MPI_MAX_PROCESSOR_NAME] = "";
    int len = 0, rc;
    if ((rc = MPI_Get_processor_name(name, &len)) != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Get_processor_name", rc);
    char *all = NULL;
    if (rank == 0 && !(all = calloc((size_t)size, MPI_MAX_PROCESSOR_NAME)))
        rc_fail(err, "out of memory gathering the host names of %d ranks", size);
    /* every rank must enter the collective, even when rank 0 is out of memory:
     * it then receives into a buffer of its own name's size (count 0) */
    rc = MPI_Gather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all ? all : name, all ? MPI_MAX_PROCESSOR_NAME : 0,
                    MPI_CHAR, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        free(all);
        return mpi_fail(err, "MPI_Gather", rc);
    }
    if (rank != 0)
        return 0;
    if (!all)
        return -1;
    char **list = calloc((size_t)size, sizeof *list);
    for (int i = 0; list && i < size; i++) {
        char *host = all + (size_t)i * MPI_MAX_PROCESSOR_NAME;
        host[MPI_MAX_PROCESSOR_NAME - 1] = '\0';
        if (!(list[i] = strdup(host))) {
            while (i-- > 0)
                free(list[i]);
            free(list);
            list = NULL;
        }
    }
    free(all);
    if (!list)
        return rc_fail(err, "out of memory gathering the host names of %d ranks", size);
    *hosts = list;
    return 0;
}

int sched_mpi_node_workers(int rank, int *n, rc_error *err)
{
    MPI_Comm node;
    int rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Comm_split_type", rc);
    int is_worker = rank != 0;
    rc = MPI_Allreduce(&is_worker, n, 1, MPI_INT, MPI_SUM, node);
    MPI_Comm_free(&node);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "MPI_Allreduce", rc);
}
