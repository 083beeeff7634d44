#include "pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLAB_VALUES 256

struct pk_slab {
    pk_slab *next;
    size_t used;                /* values handed out from v */
    pk_value v[SLAB_VALUES];
};

const char *pk_opcode_name(int op)
{
    switch (op) {
    case PK_OP_MARK: return "MARK";
    case PK_OP_STOP: return "STOP";
    case PK_OP_POP: return "POP";
    case PK_OP_POP_MARK: return "POP_MARK";
    case PK_OP_DUP: return "DUP";
    case PK_OP_FLOAT: return "FLOAT";
    case PK_OP_INT: return "INT";
    case PK_OP_BININT: return "BININT";
    case PK_OP_BININT1: return "BININT1";
    case PK_OP_LONG: return "LONG";
    case PK_OP_BININT2: return "BININT2";
    case PK_OP_NONE: return "NONE";
    case PK_OP_PERSID: return "PERSID";
    case PK_OP_BINPERSID: return "BINPERSID";
    case PK_OP_REDUCE: return "REDUCE";
    case PK_OP_STRING: return "STRING";
    case PK_OP_BINSTRING: return "BINSTRING";
    case PK_OP_SHORT_BINSTRING: return "SHORT_BINSTRING";
    case PK_OP_UNICODE: return "UNICODE";
    case PK_OP_BINUNICODE: return "BINUNICODE";
    case PK_OP_APPEND: return "APPEND";
    case PK_OP_BUILD: return "BUILD";
    case PK_OP_GLOBAL: return "GLOBAL";
    case PK_OP_DICT: return "DICT";
    case PK_OP_EMPTY_DICT: return "EMPTY_DICT";
    case PK_OP_APPENDS: return "APPENDS";
    case PK_OP_GET: return "GET";
    case PK_OP_BINGET: return "BINGET";
    case PK_OP_INST: return "INST";
    case PK_OP_LONG_BINGET: return "LONG_BINGET";
    case PK_OP_LIST: return "LIST";
    case PK_OP_EMPTY_LIST: return "EMPTY_LIST";
    case PK_OP_OBJ: return "OBJ";
    case PK_OP_PUT: return "PUT";
    case PK_OP_BINPUT: return "BINPUT";
    case PK_OP_LONG_BINPUT: return "LONG_BINPUT";
    case PK_OP_SETITEM: return "SETITEM";
    case PK_OP_TUPLE: return "TUPLE";
    case PK_OP_EMPTY_TUPLE: return "EMPTY_TUPLE";
    case PK_OP_SETITEMS: return "SETITEMS";
    case PK_OP_BINFLOAT: return "BINFLOAT";
    case PK_OP_PROTO: return "PROTO";
    case PK_OP_NEWOBJ: return "NEWOBJ";
    case PK_OP_EXT1: return "EXT1";
    case PK_OP_EXT2: return "EXT2";
    case PK_OP_EXT4: return "EXT4";
    case PK_OP_TUPLE1: return "TUPLE1";
    case PK_OP_TUPLE2: return "TUPLE2";
    case PK_OP_TUPLE3: return "TUPLE3";
    case PK_OP_NEWTRUE: return "NEWTRUE";
    case PK_OP_NEWFALSE: return "NEWFALSE";
    case PK_OP_LONG1: return "LONG1";
    case PK_OP_LONG4: return "LONG4";
    case PK_OP_BINBYTES: return "BINBYTES";
    case PK_OP_SHORT_BINBYTES: return "SHORT_BINBYTES";
    case PK_OP_SHORT_BINUNICODE: return "SHORT_BINUNICODE";
    case PK_OP_BINUNICODE8: return "BINUNICODE8";
    case PK_OP_BINBYTES8: return "BINBYTES8";
    case PK_OP_EMPTY_SET: return "EMPTY_SET";
    case PK_OP_ADDITEMS: return "ADDITEMS";
    case PK_OP_FROZENSET: return "FROZENSET";
    case PK_OP_NEWOBJ_EX: return "NEWOBJ_EX";
    case PK_OP_STACK_GLOBAL: return "STACK_GLOBAL";
    case PK_OP_MEMOIZE: return "MEMOIZE";
    case PK_OP_FRAME: return "FRAME";
    case PK_OP_BYTEARRAY8: return "BYTEARRAY8";
    case PK_OP_NEXT_BUFFER: return "NEXT_BUFFER";
    case PK_OP_READONLY_BUFFER: return "READONLY_BUFFER";
    default: return NULL;
    }
}

void pk_default_limits(pk_limits *limits)
{
    limits->max_depth = 100;
    limits->max_values = (size_t)1 << 21;
    limits->max_stack = (size_t)1 << 20;
    limits->max_memo = (size_t)1 << 22;
    limits->max_str = (uint64_t)64 << 20;
}

/* ---- the virtual machine ---- */

typedef struct vm {
    const uint8_t *buf;         /* the pickle */
    size_t size, pos;           /* its length; the next byte to read */
    size_t op_pos;              /* offset of the opcode being run */
    int op;                     /* that opcode */
    const char *name;           /* for messages */
    pk_limits lim;
    pk_doc *doc;
    size_t budget;              /* values and container slots still allowed */
    pk_vec stack;
    size_t *marks;              /* (n_marks) stack heights at each open MARK */
    size_t n_marks, cap_marks;
    pk_value **memo;            /* (memo_cap) NULL where unset */
    size_t memo_cap, memo_count;
    rc_error *err;
} vm;

static int vm_fail(vm *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int vm_fail(vm *m, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *op = pk_opcode_name(m->op);
    return rc_fail(m->err, "%s: bad pickle at offset %zu (%s): %s", m->name, m->op_pos, op ? op : "?", what);
}

static int take(vm *m, size_t n, const uint8_t **out)
{
    if (m->size - m->pos < n)
        return vm_fail(m, "truncated: needs %zu bytes, %zu left", n, m->size - m->pos);
    *out = m->buf + m->pos;
    m->pos += n;
    return 0;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Reads an n-byte little-endian unsigned argument. */
static int take_uint(vm *m, int n, uint64_t *v)
{
    const uint8_t *p = NULL;
    if (take(m, (size_t)n, &p) < 0)
        return -1;
    *v = le(p, n);
    return 0;
}

static int spend(vm *m)
{
    if (m->budget == 0)
        return vm_fail(m, "more than %zu values and container slots", m->lim.max_values);
    m->budget--;
    return 0;
}

static pk_value *new_value(vm *m, pk_kind kind)
{
    if (spend(m) < 0)
        return NULL;
    pk_slab *s = m->doc->slabs;
    if (!s || s->used == SLAB_VALUES) {
        s = malloc(sizeof *s);
        if (!s) {
            vm_fail(m, "out of memory");
            return NULL;
        }
        s->next = m->doc->slabs;
        s->used = 0;
        m->doc->slabs = s;
    }
    pk_value *v = &s->v[s->used++];
    memset(v, 0, sizeof *v);
    v->kind = kind;
    m->doc->n_values++;
    return v;
}

/* Records that `child` now sits inside `parent`. */
static int nest(vm *m, pk_value *parent, const pk_value *child)
{
    if (child && child->depth + 1 > parent->depth) {
        parent->depth = child->depth + 1;
        if (parent->depth > m->lim.max_depth)
            return vm_fail(m, "values nest deeper than %d levels", m->lim.max_depth);
    }
    return 0;
}

static int vec_push(vm *m, pk_vec *vec, pk_value *v)
{
    if (vec->n == vec->cap) {
        size_t cap = vec->cap ? 2 * vec->cap : 4;
        pk_value **grown = realloc(vec->v, cap * sizeof *grown);
        if (!grown)
            return vm_fail(m, "out of memory");
        vec->v = grown;
        vec->cap = cap;
    }
    vec->v[vec->n++] = v;
    return 0;
}

/* Adds v to one of parent's arrays, counting the slot against the budget. */
static int add_to(vm *m, pk_value *parent, pk_vec *vec, pk_value *v)
{
    if (spend(m) < 0 || vec_push(m, vec, v) < 0)
        return -1;
    return nest(m, parent, v);
}

/* Height of the stack at the innermost open MARK: values below it cannot be
 * popped until POP_MARK or an opcode that consumes the mark. */
static size_t frame_base(const vm *m)
{
    return m->n_marks ? m->marks[m->n_marks - 1] : 0;
}

static int push(vm *m, pk_value *v)
{
    if (!v)
        return -1;
    if (m->stack.n >= m->lim.max_stack)
        return vm_fail(m, "stack deeper than %zu", m->lim.max_stack);
    return vec_push(m, &m->stack, v);
}

static pk_value *pop(vm *m)
{
    if (m->stack.n <= frame_base(m)) {
        vm_fail(m, m->n_marks ? "pops past a MARK" : "stack is empty");
        return NULL;
    }
    return m->stack.v[--m->stack.n];
}

static pk_value *top(vm *m)
{
    if (m->stack.n <= frame_base(m)) {
        vm_fail(m, m->n_marks ? "needs a value above the MARK" : "stack is empty");
        return NULL;
    }
    return m->stack.v[m->stack.n - 1];
}

/* Closes the innermost MARK: the values above it are stack.v[*start..stack.n),
 * which the caller consumes before setting stack.n = *start. */
static int pop_mark(vm *m, size_t *start)
{
    if (m->n_marks == 0)
        return vm_fail(m, "no MARK to close");
    *start = m->marks[--m->n_marks];
    return 0;
}

/* After pop_mark: the value just below the mark, which APPENDS, SETITEMS and
 * ADDITEMS extend. */
static pk_value *below_mark(vm *m, size_t start)
{
    if (start <= frame_base(m)) {
        vm_fail(m, "nothing below the MARK to add items to");
        return NULL;
    }
    return m->stack.v[start - 1];
}

static int valid_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
        if (len == 0 || c > 0xf4 || c == 0xc0 || c == 0xc1 || n - i < (size_t)len)
            return 0;
        uint32_t cp = c & (0x7f >> len);
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        /* Overlong forms and code points past U+10FFFF. Lone surrogates are
         * accepted: Python's pickler writes them ("surrogatepass"). */
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += (size_t)len;
    }
    return 1;
}

/* A string or bytes value whose length is an n-byte argument. */
static int op_string(vm *m, int len_bytes, int is_signed, pk_kind kind)
{
    uint64_t len;
    if (take_uint(m, len_bytes, &len) < 0)
        return -1;
    if (is_signed && (len & 0x80000000u))
        return vm_fail(m, "negative length");
    if (len > m->lim.max_str)
        return vm_fail(m, "string of %llu bytes exceeds the limit of %llu", (unsigned long long)len,
                       (unsigned long long)m->lim.max_str);
    const uint8_t *p = NULL;
    if (take(m, (size_t)len, &p) < 0)
        return -1;
    if (kind == PK_STR && !valid_utf8(p, (size_t)len))
        return vm_fail(m, "string is not valid UTF-8");
    pk_value *v = new_value(m, kind);
    if (!v)
        return -1;
    v->str = (const char *)p;
    v->len = (size_t)len;
    return push(m, v);
}

static int op_int(vm *m, int64_t i, pk_kind kind)
{
    pk_value *v = new_value(m, kind);
    if (!v)
        return -1;
    v->i = i;
    return push(m, v);
}

/* LONG1 / LONG4: two's complement, little-endian, of a given length. */
static int op_long(vm *m, int len_bytes)
{
    uint64_t n;
    const uint8_t *p = NULL;
    if (take_uint(m, len_bytes, &n) < 0)
        return -1;
    if (len_bytes == 4 && (n & 0x80000000u))
        return vm_fail(m, "negative length");
    if (n > 8)
        return vm_fail(m, "integer of %llu bytes does not fit in 64 bits", (unsigned long long)n);
    if (take(m, (size_t)n, &p) < 0)
        return -1;
    uint64_t u = le(p, (int)n);
    if (n > 0 && n < 8 && (p[n - 1] & 0x80))
        u |= ~(uint64_t)0 << (8 * n);
    return op_int(m, (int64_t)u, PK_INT);
}

static int op_binfloat(vm *m)
{
    const uint8_t *p = NULL;
    if (take(m, 8, &p) < 0)
        return -1;
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++)
        bits = bits << 8 | p[i]; /* big-endian, unlike every other argument */
    pk_value *v = new_value(m, PK_FLOAT);
    if (!v)
        return -1;
    memcpy(&v->f, &bits, sizeof v->f);
    return push(m, v);
}

/* A container of `kind` holding stack.v[start..stack.n), which it consumes. */
static int build_sequence(vm *m, pk_kind kind, size_t start)
{
    pk_value *v = new_value(m, kind);
    if (!v)
        return -1;
    for (size_t i = start; i < m->stack.n; i++)
        if (add_to(m, v, &v->items, m->stack.v[i]) < 0)
            return -1;
    m->stack.n = start;
    return push(m, v);
}

static int op_tuple_n(vm *m, size_t n)
{
    if (m->stack.n - frame_base(m) < n)
        return vm_fail(m, "needs %zu values above the MARK or stack bottom", n);
    return build_sequence(m, PK_TUPLE, m->stack.n - n);
}

static int op_mark_sequence(vm *m, pk_kind kind)
{
    size_t start = 0;
    if (pop_mark(m, &start) < 0)
        return -1;
    return build_sequence(m, kind, start);
}

static int set_items(vm *m, pk_value *target, pk_value **kv, size_t n)
{
    if (target->kind != PK_DICT && target->kind != PK_OBJECT)
        return vm_fail(m, "sets items on a %s", pk_describe(target, (char[64]){0}, 64));
    if (n % 2 != 0)
        return vm_fail(m, "odd number of values for key/value pairs");
    for (size_t i = 0; i < n; i++)
        if (add_to(m, target, &target->entries, kv[i]) < 0)
            return -1;
    return 0;
}

static int append_items(vm *m, pk_value *target, pk_value **items, size_t n, int to_set)
{
    int ok = to_set ? target->kind == PK_SET : target->kind == PK_LIST || target->kind == PK_OBJECT;
    if (!ok)
        return vm_fail(m, "adds items to a %s", pk_describe(target, (char[64]){0}, 64));
    for (size_t i = 0; i < n; i++)
        if (add_to(m, target, &target->items, items[i]) < 0)
            return -1;
    return 0;
}

/* APPENDS, SETITEMS, ADDITEMS: items above the mark go into the value below. */
static int op_mark_items(vm *m, int op)
{
    size_t start = 0;
    if (pop_mark(m, &start) < 0)
        return -1;
    pk_value *target = below_mark(m, start);
    if (!target)
        return -1;
    pk_value **items = m->stack.v + start;
    size_t n = m->stack.n - start;
    int rc = op == PK_OP_SETITEMS ? set_items(m, target, items, n)
                                  : append_items(m, target, items, n, op == PK_OP_ADDITEMS);
    m->stack.n = start;
    return rc;
}

static int op_global(vm *m)
{
    const char *parts[2];
    size_t lens[2];
    for (int k = 0; k < 2; k++) {
        const uint8_t *start = m->buf + m->pos;
        const uint8_t *nl = memchr(start, '\n', m->size - m->pos);
        if (!nl)
            return vm_fail(m, "truncated: no newline after the name");
        lens[k] = (size_t)(nl - start);
        if (lens[k] == 0 || !valid_utf8(start, lens[k]))
            return vm_fail(m, "empty or invalid name");
        parts[k] = (const char *)start;
        m->pos += lens[k] + 1;
    }
    pk_value *v = new_value(m, PK_GLOBAL);
    if (!v)
        return -1;
    v->module = parts[0];
    v->module_len = lens[0];
    v->name = parts[1];
    v->name_len = lens[1];
    return push(m, v);
}

static int op_stack_global(vm *m)
{
    pk_value *name = pop(m), *module = name ? pop(m) : NULL;
    if (!module)
        return -1;
    if (name->kind != PK_STR || module->kind != PK_STR)
        return vm_fail(m, "module and name are not strings");
    pk_value *v = new_value(m, PK_GLOBAL);
    if (!v)
        return -1;
    v->module = module->str;
    v->module_len = module->len;
    v->name = name->str;
    v->name_len = name->len;
    return push(m, v);
}

static int push_object(vm *m, pk_kind kind, pk_value *callable, pk_value *args, pk_value *kwargs)
{
    pk_value *v = new_value(m, kind);
    if (!v)
        return -1;
    v->callable = callable;
    v->args = args;
    v->kwargs = kwargs;
    if (nest(m, v, callable) < 0 || nest(m, v, args) < 0 || nest(m, v, kwargs) < 0)
        return -1;
    return push(m, v);
}

static int op_build(vm *m)
{
    pk_value *state = pop(m), *obj = state ? top(m) : NULL;
    if (!obj)
        return -1;
    if (obj->kind != PK_OBJECT && obj->kind != PK_DICT && obj->kind != PK_LIST && obj->kind != PK_SET)
        return vm_fail(m, "sets the state of a %s", pk_describe(obj, (char[64]){0}, 64));
    obj->state = state;
    return nest(m, obj, state);
}

static int memo_put(vm *m, uint64_t index)
{
    pk_value *v = top(m);
    if (!v)
        return -1;
    if (index >= m->lim.max_memo)
        return vm_fail(m, "memo index %llu exceeds the limit of %zu", (unsigned long long)index,
                       m->lim.max_memo);
    if (index >= m->memo_cap) {
        size_t cap = m->memo_cap ? m->memo_cap : 64;
        while (cap <= index)
            cap *= 2;
        pk_value **grown = realloc(m->memo, cap * sizeof *grown);
        if (!grown)
            return vm_fail(m, "out of memory");
        memset(grown + m->memo_cap, 0, (cap - m->memo_cap) * sizeof *grown);
        m->memo = grown;
        m->memo_cap = cap;
    }
    if (!m->memo[index])
        m->memo_count++;
    m->memo[index] = v;
    return 0;
}

static int memo_get(vm *m, uint64_t index)
{
    if (index >= m->memo_cap || !m->memo[index])
        return vm_fail(m, "memo index %llu was never set", (unsigned long long)index);
    return push(m, m->memo[index]);
}

/* Runs one opcode; returns 1 after STOP, 0 to go on, -1 on error. */
static int step(vm *m)
{
    uint64_t u = 0;
    pk_value *a, *b, *c;
    size_t start = 0;
    switch (m->op) {
    case PK_OP_PROTO:
        if (take_uint(m, 1, &u) < 0)
            return -1;
        if (u > 5)
            return vm_fail(m, "unsupported pickle protocol %llu", (unsigned long long)u);
        return 0;
    case PK_OP_FRAME:
        /* Frames only help buffered readers: check the length, read on. */
        if (take_uint(m, 8, &u) < 0)
            return -1;
        if (u > m->size - m->pos)
            return vm_fail(m, "truncated: frame of %llu bytes, %zu left", (unsigned long long)u,
                           m->size - m->pos);
        return 0;
    case PK_OP_STOP:
        if (!(a = pop(m)))
            return -1;
        m->doc->root = a;
        return 1;
    case PK_OP_MARK:
        if (m->n_marks >= m->lim.max_stack)
            return vm_fail(m, "more than %zu open MARKs", m->lim.max_stack);
        if (m->n_marks == m->cap_marks) {
            size_t cap = m->cap_marks ? 2 * m->cap_marks : 16;
            size_t *grown = realloc(m->marks, cap * sizeof *grown);
            if (!grown)
                return vm_fail(m, "out of memory");
            m->marks = grown;
            m->cap_marks = cap;
        }
        m->marks[m->n_marks++] = m->stack.n;
        return 0;
    case PK_OP_POP:
        if (m->stack.n > frame_base(m))
            m->stack.n--;
        else if (m->n_marks > 0)
            m->n_marks--;
        else
            return vm_fail(m, "stack is empty");
        return 0;
    case PK_OP_POP_MARK:
        if (pop_mark(m, &start) < 0)
            return -1;
        m->stack.n = start;
        return 0;
    case PK_OP_DUP:
        return (a = top(m)) ? push(m, a) : -1;
    case PK_OP_NONE:
        return push(m, new_value(m, PK_NONE));
    case PK_OP_NEWTRUE:
    case PK_OP_NEWFALSE:
        return op_int(m, m->op == PK_OP_NEWTRUE, PK_BOOL);
    case PK_OP_BININT:
        return take_uint(m, 4, &u) < 0 ? -1 : op_int(m, (int32_t)(uint32_t)u, PK_INT);
    case PK_OP_BININT1:
        return take_uint(m, 1, &u) < 0 ? -1 : op_int(m, (int64_t)u, PK_INT);
    case PK_OP_BININT2:
        return take_uint(m, 2, &u) < 0 ? -1 : op_int(m, (int64_t)u, PK_INT);
    case PK_OP_LONG1:
        return op_long(m, 1);
    case PK_OP_LONG4:
        return op_long(m, 4);
    case PK_OP_BINFLOAT:
        return op_binfloat(m);
    case PK_OP_SHORT_BINUNICODE:
        return op_string(m, 1, 0, PK_STR);
    case PK_OP_BINUNICODE:
        return op_string(m, 4, 0, PK_STR);
    case PK_OP_BINUNICODE8:
        return op_string(m, 8, 0, PK_STR);
    case PK_OP_SHORT_BINSTRING:
        return op_string(m, 1, 0, PK_STR);
    case PK_OP_BINSTRING:
        return op_string(m, 4, 1, PK_STR);
    case PK_OP_SHORT_BINBYTES:
        return op_string(m, 1, 0, PK_BYTES);
    case PK_OP_BINBYTES:
        return op_string(m, 4, 0, PK_BYTES);
    case PK_OP_BINBYTES8:
    case PK_OP_BYTEARRAY8:
        return op_string(m, 8, 0, PK_BYTES);
    case PK_OP_EMPTY_TUPLE:
        return push(m, new_value(m, PK_TUPLE));
    case PK_OP_EMPTY_LIST:
        return push(m, new_value(m, PK_LIST));
    case PK_OP_EMPTY_DICT:
        return push(m, new_value(m, PK_DICT));
    case PK_OP_EMPTY_SET:
        return push(m, new_value(m, PK_SET));
    case PK_OP_TUPLE1:
    case PK_OP_TUPLE2:
    case PK_OP_TUPLE3:
        return op_tuple_n(m, (size_t)(m->op - PK_OP_TUPLE1 + 1));
    case PK_OP_TUPLE:
        return op_mark_sequence(m, PK_TUPLE);
    case PK_OP_LIST:
        return op_mark_sequence(m, PK_LIST);
    case PK_OP_FROZENSET:
        return op_mark_sequence(m, PK_SET);
    case PK_OP_DICT:
        if (pop_mark(m, &start) < 0 || !(a = new_value(m, PK_DICT)))
            return -1;
        if (set_items(m, a, m->stack.v + start, m->stack.n - start) < 0)
            return -1;
        m->stack.n = start;
        return push(m, a);
    case PK_OP_APPEND:
        if (!(a = pop(m)) || !(b = top(m)))
            return -1;
        return append_items(m, b, &a, 1, 0);
    case PK_OP_SETITEM:
        if (!(a = pop(m)) || !(b = pop(m)) || !(c = top(m)))
            return -1;
        return set_items(m, c, (pk_value *[]){b, a}, 2);
    case PK_OP_APPENDS:
    case PK_OP_SETITEMS:
    case PK_OP_ADDITEMS:
        return op_mark_items(m, m->op);
    case PK_OP_GLOBAL:
        return op_global(m);
    case PK_OP_STACK_GLOBAL:
        return op_stack_global(m);
    case PK_OP_REDUCE:
        if (!(a = pop(m)) || !(b = pop(m)))
            return -1;
        return push_object(m, PK_OBJECT, b, a, NULL);
    case PK_OP_NEWOBJ:
        if (!(a = pop(m)) || !(b = pop(m)))
            return -1;
        return push_object(m, PK_OBJECT, b, a, NULL);
    case PK_OP_NEWOBJ_EX:
        if (!(a = pop(m)) || !(b = pop(m)) || !(c = pop(m)))
            return -1;
        return push_object(m, PK_OBJECT, c, b, a);
    case PK_OP_BUILD:
        return op_build(m);
    case PK_OP_BINPERSID:
        if (!(a = pop(m)))
            return -1;
        return push_object(m, PK_PERSID, NULL, a, NULL);
    case PK_OP_BINPUT:
        return take_uint(m, 1, &u) < 0 ? -1 : memo_put(m, u);
    case PK_OP_LONG_BINPUT:
        return take_uint(m, 4, &u) < 0 ? -1 : memo_put(m, u);
    case PK_OP_MEMOIZE:
        return memo_put(m, m->memo_count);
    case PK_OP_BINGET:
        return take_uint(m, 1, &u) < 0 ? -1 : memo_get(m, u);
    case PK_OP_LONG_BINGET:
        return take_uint(m, 4, &u) < 0 ? -1 : memo_get(m, u);
    default:
        if (pk_opcode_name(m->op))
            return vm_fail(m, "opcode 0x%02x is not supported in PyTorch checkpoints", m->op);
        return rc_fail(m->err, "%s: bad pickle at offset %zu: unknown opcode 0x%02x", m->name, m->op_pos,
                       m->op);
    }
}

void pk_free(pk_doc *doc)
{
    pk_slab *s = doc->slabs;
    while (s) {
        for (size_t i = 0; i < s->used; i++) {
            free(s->v[i].items.v);
            free(s->v[i].entries.v);
        }
        pk_slab *next = s->next;
        free(s);
        s = next;
    }
    memset(doc, 0, sizeof *doc);
}

int pk_load(pk_doc *doc, const void *buf, size_t size, const pk_limits *limits, const char *name,
            rc_error *err)
{
    memset(doc, 0, sizeof *doc);
    vm m = {.buf = buf, .size = size, .name = name, .doc = doc, .err = err};
    if (limits)
        m.lim = *limits;
    else
        pk_default_limits(&m.lim);
    m.budget = m.lim.max_values;
    /* Allocated up front so that `stack.v + start` is always a real pointer. */
    m.stack.cap = 16;
    m.stack.v = malloc(m.stack.cap * sizeof *m.stack.v);
    int rc = m.stack.v ? 0 : rc_fail(err, "%s: out of memory", name);
    while (rc == 0) {
        if (m.pos >= m.size) {
            rc = rc_fail(err, "%s: truncated pickle (no STOP opcode in its %zu bytes)", name, size);
            break;
        }
        m.op_pos = m.pos;
        m.op = m.buf[m.pos++];
        rc = step(&m);
    }
    free(m.stack.v);
    free(m.marks);
    free(m.memo);
    if (rc < 0) {
        pk_free(doc);
        return -1;
    }
    return 0;
}

/* ---- inspecting values ---- */

static int bytes_eq(const char *p, size_t n, const char *s)
{
    return strlen(s) == n && memcmp(p, s, n) == 0;
}

int pk_is_str(const pk_value *v, const char *s)
{
    return v && v->kind == PK_STR && bytes_eq(v->str, v->len, s);
}

int pk_is_global(const pk_value *v, const char *module, const char *name)
{
    return v && v->kind == PK_GLOBAL && bytes_eq(v->module, v->module_len, module) &&
           bytes_eq(v->name, v->name_len, name);
}

int pk_is_call(const pk_value *v, const char *module, const char *name)
{
    return v && v->kind == PK_OBJECT && pk_is_global(v->callable, module, name);
}

static int clip(size_t n)
{
    return n > 60 ? 60 : (int)n;
}

const char *pk_describe(const pk_value *v, char *out, size_t size)
{
    static const char *const kind_names[] = {
        [PK_NONE] = "None", [PK_BOOL] = "bool", [PK_INT] = "int", [PK_FLOAT] = "float",
        [PK_STR] = "str", [PK_BYTES] = "bytes", [PK_TUPLE] = "tuple", [PK_LIST] = "list",
        [PK_DICT] = "dict", [PK_SET] = "set", [PK_GLOBAL] = "global", [PK_OBJECT] = "object",
        [PK_PERSID] = "persistent id",
    };
    if (!v) {
        snprintf(out, size, "nothing");
        return out;
    }
    switch (v->kind) {
    case PK_INT:
        snprintf(out, size, "int %lld", (long long)v->i);
        break;
    case PK_STR:
        snprintf(out, size, "str '%.*s%s'", clip(v->len), v->str, v->len > 60 ? "..." : "");
        break;
    case PK_TUPLE:
    case PK_LIST:
    case PK_SET:
        snprintf(out, size, "%s of %zu", kind_names[v->kind], v->items.n);
        break;
    case PK_DICT:
        snprintf(out, size, "dict of %zu", v->entries.n / 2);
        break;
    case PK_GLOBAL:
        snprintf(out, size, "global %.*s.%.*s", clip(v->module_len), v->module, clip(v->name_len), v->name);
        break;
    case PK_OBJECT:
        if (v->callable && v->callable->kind == PK_GLOBAL)
            snprintf(out, size, "%.*s.%.*s(...)", clip(v->callable->module_len), v->callable->module,
                     clip(v->callable->name_len), v->callable->name);
        else
            snprintf(out, size, "object");
        break;
    default:
        snprintf(out, size, "%s", kind_names[v->kind]);
        break;
    }
    return out;
}

/* ---- writer ---- */

void pk_writer_init(pk_writer *w)
{
    memset(w, 0, sizeof *w);
}

void pk_writer_free(pk_writer *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

static void put_bytes(pk_writer *w, const void *p, size_t n)
{
    if (w->failed)
        return;
    if (w->cap - w->len < n) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap - w->len < n)
            cap *= 2;
        uint8_t *grown = realloc(w->buf, cap);
        if (!grown) {
            w->failed = 1;
            return;
        }
        w->buf = grown;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

/* An opcode followed by the n low bytes of v, little-endian. */
static void put_op_le(pk_writer *w, int op, uint64_t v, int n)
{
    uint8_t b[9];
    b[0] = (uint8_t)op;
    for (int i = 0; i < n; i++)
        b[1 + i] = (uint8_t)(v >> (8 * i));
    put_bytes(w, b, (size_t)n + 1);
}

void pk_write_proto(pk_writer *w, int protocol)
{
    put_op_le(w, PK_OP_PROTO, (uint64_t)protocol, 1);
}

void pk_write_op(pk_writer *w, int op)
{
    put_op_le(w, op, 0, 0);
}

void pk_write_int(pk_writer *w, int64_t v)
{
    if (v >= 0 && v < 0x100)
        put_op_le(w, PK_OP_BININT1, (uint64_t)v, 1);
    else if (v >= 0 && v < 0x10000)
        put_op_le(w, PK_OP_BININT2, (uint64_t)v, 2);
    else if (v >= INT32_MIN && v <= INT32_MAX)
        put_op_le(w, PK_OP_BININT, (uint64_t)v, 4);
    else {
        /* LONG1 with the fewest bytes that keep the sign, as Python writes. */
        uint64_t u = (uint64_t)v;
        int n = 8;
        while (n > 1) {
            uint8_t last = (uint8_t)(u >> (8 * (n - 1))), prev = (uint8_t)(u >> (8 * (n - 2)));
            if ((last == 0x00 && !(prev & 0x80)) || (last == 0xff && (prev & 0x80)))
                n--;
            else
                break;
        }
        put_op_le(w, PK_OP_LONG1, (uint64_t)n, 1);
        uint8_t b[8];
        for (int i = 0; i < n; i++)
            b[i] = (uint8_t)(u >> (8 * i));
        put_bytes(w, b, (size_t)n);
    }
}

void pk_write_str(pk_writer *w, const char *s)
{
    size_t n = strlen(s);
    put_op_le(w, PK_OP_BINUNICODE, n, 4);
    put_bytes(w, s, n);
}

void pk_write_global(pk_writer *w, const char *module, const char *name)
{
    pk_write_op(w, PK_OP_GLOBAL);
    put_bytes(w, module, strlen(module));
    put_bytes(w, "\n", 1);
    put_bytes(w, name, strlen(name));
    put_bytes(w, "\n", 1);
}

uint32_t pk_write_memoize(pk_writer *w)
{
    uint32_t index = w->n_memo++;
    if (index < 0x100)
        put_op_le(w, PK_OP_BINPUT, index, 1);
    else
        put_op_le(w, PK_OP_LONG_BINPUT, index, 4);
    return index;
}

void pk_write_get(pk_writer *w, uint32_t index)
{
    if (index < 0x100)
        put_op_le(w, PK_OP_BINGET, index, 1);
    else
        put_op_le(w, PK_OP_LONG_BINGET, index, 4);
}
