"""PyTorch side of tests/test_checkpoint.c.

  write DIR           torch.save several state dicts into DIR (the cases below)
                      and, for each X, X.expect: what the C reader must find.
  read DIR FILE...    torch.load each FILE (written by the C writer) and write
                      DIR/<basename>.expect describing what torch found.
  read_st DIR FILE... the same for safetensors files, parsed here in plain
                      Python (struct + json), independently of the C reader.
  deflate SRC DST     copy the zip SRC to DST with every entry deflated.

.expect format, one line per tensor in the dict's order:
  key <TAB> dtype <TAB> d0,d1,... <TAB> v0 v1 ...
dtype is PyTorch's name ("float32"); values are the tensor's elements in
row-major order, floats exactly as float.hex() of the float64 value, ints in
decimal, bools as 0/1. The first line is the dict's class name.

Exits 77 when torch cannot be imported (the C test then skips).
"""
import collections
import json
import os
import struct
import sys
import zipfile

try:
    import torch
except ImportError:
    sys.exit(77)

DTYPE_NAMES = {
    torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
    torch.float64: "float64", torch.int64: "int64", torch.int32: "int32",
    torch.int16: "int16", torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool",
}


def value_text(t):
    flat = t.detach().contiguous().reshape(-1)
    if t.dtype.is_floating_point:
        return " ".join(float(v).hex() for v in flat.double().tolist())
    return " ".join(str(int(v)) for v in flat.tolist())


def write_expect(path, sd):
    with open(path, "w") as f:
        f.write(type(sd).__name__ + "\n")
        for key, t in sd.items():
            shape = ",".join(str(d) for d in t.shape)
            f.write(f"{key}\t{DTYPE_NAMES[t.dtype]}\t{shape}\t{value_text(t)}\n")


def dtypes_case(g):
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(2, 3, generator=g)
    # float16 edge values: max, subnormals, signed zero, infinities, plus noise
    sd["f16"] = torch.cat([torch.tensor([65504.0, 2.0 ** -24, 2.0 ** -20, -0.0, float("inf"), -float("inf"), -2.5]),
                           torch.randn(9, generator=g)]).half().reshape(4, 4)
    sd["bf16"] = (torch.randn(3, 5, generator=g) * 1000).bfloat16()
    sd["f64"] = torch.randn(7, generator=g, dtype=torch.float64)
    sd["num_batches_tracked"] = torch.tensor(123456789012, dtype=torch.int64)  # ndim 0
    sd["i64"] = torch.tensor([-(2 ** 62), -1, 0, 2 ** 40], dtype=torch.int64)
    sd["i32"] = torch.tensor([[-(2 ** 31), 7], [2 ** 31 - 1, -5]], dtype=torch.int32)
    sd["i16"] = torch.tensor([-32768, 32767, 3], dtype=torch.int16)
    sd["i8"] = torch.tensor([-128, 127, 0, -1], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 255, 17], dtype=torch.uint8)
    sd["mask"] = torch.tensor([True, False, True])
    sd["empty"] = torch.zeros(0, 3)
    return sd


def views_case(g):
    base = torch.randn(10, generator=g)
    m = torch.randn(3, 4, generator=g)
    sd = collections.OrderedDict()
    sd["transposed"] = m.t()                      # strides (1, 4)
    sd["shared_a"] = base[2:5]                    # one storage, offset 2
    sd["shared_b"] = base[4:8].view(2, 2)         # same storage, offset 4
    sd["every_other"] = m[:, ::2]                 # strides (4, 2)
    sd["expanded"] = torch.randn(3, 1, generator=g).expand(3, 4)  # stride 0
    return sd


def param_case(g):
    sd = collections.OrderedDict()
    sd["weight"] = torch.nn.Parameter(torch.randn(4, 2, generator=g))
    sd["frozen"] = torch.nn.Parameter(torch.randn(3, generator=g), requires_grad=False)
    return sd


def module_case(g):
    torch.manual_seed(7)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    with torch.no_grad():
        model[1].running_mean.copy_(torch.randn(4, generator=g))
        model[1].running_var.copy_(torch.rand(4, generator=g) + 0.5)
        model[1].num_batches_tracked.fill_(42)
    sd = model.state_dict()
    assert hasattr(sd, "_metadata")
    return sd


def write_cases(out):
    g = torch.Generator().manual_seed(1234)
    cases = {
        "dtypes.pt": (dtypes_case(g), {}),
        "views.pt": (views_case(g), {}),
        "param.pt": (param_case(g), {}),
        "module.pt": (module_case(g), {}),
        "renamed_model.bin": (dtypes_case(g), {}),         # archive folder "renamed_model"
        "proto4.pt": (views_case(g), {"pickle_protocol": 4}),
    }
    for name, (sd, kwargs) in cases.items():
        torch.save(sd, os.path.join(out, name), **kwargs)
        write_expect(os.path.join(out, name + ".expect"), sd)
    # The reader must use the archive's own folder, not assume "archive".
    with zipfile.ZipFile(os.path.join(out, "renamed_model.bin")) as z:
        assert z.namelist()[0].startswith("renamed_model/")
    deflate(os.path.join(out, "dtypes.pt"), os.path.join(out, "deflated.pt"))
    write_big_endian(os.path.join(out, "dtypes.pt"), os.path.join(out, "bigendian.pt"), cases["dtypes.pt"][0])


def write_big_endian(src, dst, sd):
    """dtypes.pt as a big-endian machine would save it (PyTorch >= 2.1 writes
    a byteorder record): every storage byte-swapped, plus byteorder "big".
    torch.save numbers storages in order of first use, one per tensor here."""
    sizes = [t.element_size() for t in sd.values()]
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        prefix = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            data = zin.read(info)
            rest = info.filename[len(prefix) + 1:]
            if rest.startswith("data/"):
                size = sizes[int(rest[5:])]
                data = b"".join(data[i:i + size][::-1] for i in range(0, len(data), size))
            zout.writestr(info.filename, data)
        zout.writestr(prefix + "/byteorder", "big")
    write_expect(dst + ".expect", sd)


def deflate(src, dst):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))


def read_torch(out, paths):
    for path in paths:
        sd = torch.load(path)
        write_expect(os.path.join(out, os.path.basename(path) + ".expect"), sd)


ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
             "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(out, paths):
    for path in paths:
        with open(path, "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=collections.OrderedDict)
        data = raw[8 + n:]
        assert (8 + n) % 8 == 0, "data must start 8-byte aligned"
        sd = collections.OrderedDict()
        end_prev = 0
        for key, info in header.items():
            if key == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            assert begin == end_prev, "tensors must be contiguous in the data"
            end_prev = end
            dtype = ST_DTYPES[info["dtype"]]
            buf = bytearray(data[begin:end])
            t = torch.frombuffer(buf, dtype=dtype) if buf else torch.zeros(0, dtype=dtype)
            sd[key] = t.reshape(info["shape"])
        assert end_prev == len(data), "no bytes may follow the last tensor"
        write_expect(os.path.join(out, os.path.basename(path) + ".expect"), sd)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "write":
        write_cases(args[0])
    elif mode == "read":
        read_torch(args[0], args[1:])
    elif mode == "read_st":
        read_safetensors(args[0], args[1:])
    elif mode == "deflate":
        deflate(args[0], args[1])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
