/* pickle.h: the subset of Python's pickle format that PyTorch state dicts use.
 *
 * pk_load runs a small pickle virtual machine (protocols 2 to 5) that builds
 * a tree of pk_value instead of Python objects: no code runs, globals are
 * only names, REDUCE/NEWOBJ record "callable(args)" for the caller to
 * interpret, BUILD records the state, BINPERSID records the persistent id.
 * Strings and bytes point into the pickle (not copied, not NUL-terminated).
 *
 * Hostile input: every read is bounds-checked; the stack, the memo, the
 * number of values, the nesting depth and string lengths are limited
 * (pk_limits); an opcode outside the supported set is an error naming it and
 * its offset. The memo lets a pickle refer to a value twice, and mutable
 * containers (list, dict, objects) can then contain themselves: a consumer
 * walking the tree must bound its own recursion.
 *
 * pk_writer emits protocol-2 pickles (used to write torch.save files).
 */
#ifndef RC_PICKLE_H
#define RC_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Opcodes (CPython's Lib/pickle.py names). */
enum {
    PK_OP_MARK = '(', PK_OP_STOP = '.', PK_OP_POP = '0', PK_OP_POP_MARK = '1', PK_OP_DUP = '2',
    PK_OP_FLOAT = 'F', PK_OP_INT = 'I', PK_OP_BININT = 'J', PK_OP_BININT1 = 'K', PK_OP_LONG = 'L',
    PK_OP_BININT2 = 'M', PK_OP_NONE = 'N', PK_OP_PERSID = 'P', PK_OP_BINPERSID = 'Q', PK_OP_REDUCE = 'R',
    PK_OP_STRING = 'S', PK_OP_BINSTRING = 'T', PK_OP_SHORT_BINSTRING = 'U', PK_OP_UNICODE = 'V',
    PK_OP_BINUNICODE = 'X', PK_OP_APPEND = 'a', PK_OP_BUILD = 'b', PK_OP_GLOBAL = 'c', PK_OP_DICT = 'd',
    PK_OP_EMPTY_DICT = '}', PK_OP_APPENDS = 'e', PK_OP_GET = 'g', PK_OP_BINGET = 'h', PK_OP_INST = 'i',
    PK_OP_LONG_BINGET = 'j', PK_OP_LIST = 'l', PK_OP_EMPTY_LIST = ']', PK_OP_OBJ = 'o', PK_OP_PUT = 'p',
    PK_OP_BINPUT = 'q', PK_OP_LONG_BINPUT = 'r', PK_OP_SETITEM = 's', PK_OP_TUPLE = 't',
    PK_OP_EMPTY_TUPLE = ')', PK_OP_SETITEMS = 'u', PK_OP_BINFLOAT = 'G',
    /* protocol 2 */
    PK_OP_PROTO = 0x80, PK_OP_NEWOBJ = 0x81, PK_OP_EXT1 = 0x82, PK_OP_EXT2 = 0x83, PK_OP_EXT4 = 0x84,
    PK_OP_TUPLE1 = 0x85, PK_OP_TUPLE2 = 0x86, PK_OP_TUPLE3 = 0x87, PK_OP_NEWTRUE = 0x88,
    PK_OP_NEWFALSE = 0x89, PK_OP_LONG1 = 0x8a, PK_OP_LONG4 = 0x8b,
    /* protocol 3 */
    PK_OP_BINBYTES = 'B', PK_OP_SHORT_BINBYTES = 'C',
    /* protocol 4 */
    PK_OP_SHORT_BINUNICODE = 0x8c, PK_OP_BINUNICODE8 = 0x8d, PK_OP_BINBYTES8 = 0x8e, PK_OP_EMPTY_SET = 0x8f,
    PK_OP_ADDITEMS = 0x90, PK_OP_FROZENSET = 0x91, PK_OP_NEWOBJ_EX = 0x92, PK_OP_STACK_GLOBAL = 0x93,
    PK_OP_MEMOIZE = 0x94, PK_OP_FRAME = 0x95,
    /* protocol 5 */
    PK_OP_BYTEARRAY8 = 0x96, PK_OP_NEXT_BUFFER = 0x97, PK_OP_READONLY_BUFFER = 0x98,
};

/* CPython's name of an opcode ("BINPUT"), or NULL for a byte that is none. */
const char *pk_opcode_name(int op);

typedef enum pk_kind {
    PK_NONE,
    PK_BOOL,
    PK_INT,
    PK_FLOAT,
    PK_STR,     /* text (valid UTF-8) */
    PK_BYTES,   /* bytes or bytearray */
    PK_TUPLE,
    PK_LIST,
    PK_DICT,
    PK_SET,     /* set or frozenset */
    PK_GLOBAL,  /* a name `module.name` (GLOBAL / STACK_GLOBAL) */
    PK_OBJECT,  /* callable(*args, **kwargs) from REDUCE / NEWOBJ / NEWOBJ_EX */
    PK_PERSID,  /* persistent_load(args) from BINPERSID */
} pk_kind;

typedef struct pk_value pk_value;

/* A growable array of value pointers. */
typedef struct pk_vec {
    pk_value **v;   /* (n) */
    size_t n, cap;
} pk_vec;

struct pk_value {
    pk_kind kind;
    int depth;              /* containers nested below this value (0 for scalars) */
    int64_t i;              /* PK_BOOL (0 or 1), PK_INT */
    double f;               /* PK_FLOAT */
    const char *str;        /* PK_STR, PK_BYTES: (len) bytes inside the pickle */
    size_t len;
    const char *module;     /* PK_GLOBAL: (module_len) bytes */
    size_t module_len;
    const char *name;       /* PK_GLOBAL: (name_len) bytes */
    size_t name_len;
    pk_vec items;           /* PK_TUPLE, PK_LIST, PK_SET: elements; PK_OBJECT: APPENDed items */
    pk_vec entries;         /* PK_DICT, PK_OBJECT: SETITEM pairs as key0, value0, key1, value1... */
    pk_value *callable;     /* PK_OBJECT: what was called (usually a PK_GLOBAL) */
    pk_value *args;         /* PK_OBJECT: its arguments (usually a PK_TUPLE); PK_PERSID: the id */
    pk_value *kwargs;       /* PK_OBJECT from NEWOBJ_EX: keyword arguments, else NULL */
    pk_value *state;        /* argument of BUILD on this value, or NULL */
};

/* Resource limits; pk_load refuses pickles that exceed them. */
typedef struct pk_limits {
    int max_depth;          /* nesting of containers */
    size_t max_values;      /* values created */
    size_t max_stack;       /* stack entries and open marks */
    size_t max_memo;        /* memo indices are below this */
    uint64_t max_str;       /* bytes in one string or bytes value */
} pk_limits;

/* The defaults: depth 100, 2^21 values, 2^20 stack entries, memo indices
 * below 2^22, strings up to 64 MiB. A state dict of the model card's 398
 * tensors uses about 6,000 values and depth 4. */
void pk_default_limits(pk_limits *limits);

typedef struct pk_slab pk_slab;

typedef struct pk_doc {
    pk_value *root;         /* the value STOP returned */
    pk_slab *slabs;         /* storage of every value */
    size_t n_values;
} pk_doc;

/* Unpickles buf[0..size). `name` names the pickle in messages, e.g.
 * "model.bin (archive/data.pkl)"; limits may be NULL for the defaults. On
 * failure the message gives the opcode's name and offset and *doc is left
 * empty (safe to pk_free). */
int pk_load(pk_doc *doc, const void *buf, size_t size, const pk_limits *limits, const char *name,
            rc_error *err);

/* Frees every value of doc. */
void pk_free(pk_doc *doc);

/* Tests on values (each false for a NULL value). */
int pk_is_str(const pk_value *v, const char *s);                         /* PK_STR equal to s */
int pk_is_global(const pk_value *v, const char *module, const char *name); /* PK_GLOBAL module.name */
int pk_is_call(const pk_value *v, const char *module, const char *name);   /* PK_OBJECT whose callable is module.name */

/* A short description for messages: "int", "tuple of 3", "collections.OrderedDict(...)".
 * Writes at most size bytes (NUL included) into out and returns out. */
const char *pk_describe(const pk_value *v, char *out, size_t size);

/* Writer of protocol-2 pickles into a growing buffer. Out-of-memory is
 * sticky: the calls do nothing once it happened and pk_writer.failed says so. */
typedef struct pk_writer {
    uint8_t *buf;           /* (len) bytes written */
    size_t len, cap;
    uint32_t n_memo;        /* memo entries written (next BINPUT index) */
    int failed;             /* 1 after an allocation failure */
} pk_writer;

void pk_writer_init(pk_writer *w);
void pk_writer_free(pk_writer *w);
void pk_write_proto(pk_writer *w, int protocol);                        /* PROTO */
void pk_write_op(pk_writer *w, int op);                                /* one opcode without argument */
void pk_write_int(pk_writer *w, int64_t v);                             /* BININT1/BININT2/BININT/LONG1 */
void pk_write_str(pk_writer *w, const char *s);                         /* BINUNICODE */
void pk_write_global(pk_writer *w, const char *module, const char *name); /* GLOBAL */
uint32_t pk_write_memoize(pk_writer *w);                                /* BINPUT/LONG_BINPUT of the top; its index */
void pk_write_get(pk_writer *w, uint32_t index);                        /* BINGET/LONG_BINGET */

#endif
