"""A model-file corpus that the tests and benchmarks/bench_scan.py build themselves: benign
files and one malicious file per technique. Every malicious payload, if it were ever
loaded, only creates the file ``CANARY`` inside the corpus folder (a tmp dir); nothing else.
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

CANARY = "CANARY"


# -- hand-written pickles -----------------------------------------------------------------
def _str4(s: str) -> bytes:
    """SHORT_BINUNICODE + MEMOIZE (protocol 4)."""
    raw = s.encode()
    return b"\x8c" + bytes([len(raw)]) + raw + b"\x94"


def _uni0(s: str) -> bytes:
    return b"V" + s.encode("raw-unicode-escape") + b"\n"


def p0_global_open(canary: str) -> bytes:
    """Protocol 0 GLOBAL + REDUCE: builtins.open(canary, 'w')."""
    return b"cbuiltins\nopen\n(" + _uni0(canary) + _uni0("w") + b"tR."


def p0_inst_open(canary: str) -> bytes:
    """INST calls its class with the marked arguments: open(canary, 'w')."""
    return b"(" + _uni0(canary) + _uni0("w") + b"ibuiltins\nopen\n."


def p1_obj_open(canary: str) -> bytes:
    """OBJ: the first marked item is called with the rest."""
    return b"(cbuiltins\nopen\n" + _uni0(canary) + _uni0("w") + b"o."


def p4_stack_global_memo(canary: str) -> bytes:
    """STACK_GLOBAL whose module and name come back from the memo (not adjacent strings)."""
    return (
        b"\x80\x04"
        + _str4("builtins")
        + b"0"
        + _str4("open")
        + b"0"  # memo 0, 1; POP both
        + b"h\x00h\x01\x93"
        + _str4(canary)
        + _str4("w")
        + b"\x86R."
    )


def p4_dotted_name(canary: str) -> bytes:
    """Protocol 4 dotted name: pathlib + 'Path.touch' reaches Path.touch(Path(canary))."""
    return (
        b"\x80\x04"
        + _str4("pathlib")
        + _str4("Path.touch")
        + b"\x93"
        + _str4("pathlib")
        + _str4("Path")
        + b"\x93"
        + _str4(canary)
        + b"\x85R\x85R."
    )


def p2_getattr_chain(canary: str) -> bytes:
    """getattr(pathlib.Path(canary), 'touch')(): a computed callable."""
    return (
        b"\x80\x02cbuiltins\ngetattr\n(cpathlib\nPath\n("
        + _uni0(canary)
        + b"tR"
        + _uni0("touch")
        + b"tR)R."
    )


def p2_newobj() -> bytes:
    """NEWOBJ of subprocess.Popen (structure only: __new__ alone starts nothing)."""
    return b"\x80\x02csubprocess\nPopen\n)\x81."


def p4_newobj_ex() -> bytes:
    return b"\x80\x04" + _str4("os") + _str4("_wrap_close") + b"\x93)}\x92."


def p2_build_on_global() -> bytes:
    """BUILD on an imported module object: rewires torch._utils for later loads."""
    return b"\x80\x02ctorch\n_utils\n}X\x05\x00\x00\x00_evilK\x01sb."


def p2_ext() -> bytes:
    return b"\x80\x02\x82\x07)R."


class Evil:
    """Pickles as ``open(canary, 'w')``: the classic __reduce__ payload."""

    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.canary, "w"))


def evil_pickle(canary: str, protocol: int) -> bytes:
    return pickle.dumps({"weights": [1.0, 2.0], "payload": Evil(canary)}, protocol=protocol)


# -- zip surgery ---------------------------------------------------------------------------
def _torch_zip(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def zip_local_name_mismatch(data: bytes) -> bytes:
    """Rename the first local header's member without touching the central directory."""
    n = struct.unpack_from("<H", data, 26)[0]
    name = bytearray(data[30 : 30 + n])
    name[-1] = ord("x") if name[-1] != ord("x") else ord("y")
    return data[:30] + bytes(name) + data[30 + n :]


def zip_bad_crc(data: bytes, member_suffix: str = "data.pkl") -> bytes:
    zf = zipfile.ZipFile(io.BytesIO(data))
    info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix))
    off = info.header_offset
    n, e = struct.unpack_from("<2H", data, off + 26)
    start = off + 30 + n + e + 5  # flip a byte inside the pickle's data
    out = bytearray(data)
    out[start] ^= 0x01
    return bytes(out)


def zip_encrypted_flag(data: bytes) -> bytes:
    out = bytearray(data)
    out[6] |= 0x01  # first local header
    cd = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x05\x06"))
    first_cd = data.find(b"PK\x01\x02")
    out[first_cd + 8] |= 0x01
    del cd
    return bytes(out)


def zip_bomb(size: int = 96 << 20) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("archive/data/0", "w") as fh:
            chunk = b"\x00" * (1 << 20)
            for _ in range(size >> 20):
                fh.write(chunk)
        zf.writestr("archive/data.pkl", pickle.dumps({"ok": 1}, protocol=2))
    return buf.getvalue()


def legacy_torch_with(sys_info_pickle: bytes | None = None, trailing: bytes = b"") -> bytes:
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(3, 2).state_dict(), buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    if sys_info_pickle is None:
        return data + trailing
    # replace the third pickle (sys_info) with the given one; offsets found statically
    import pickletools

    stream = io.BytesIO(data)
    for _ in range(2):
        for _op, _arg, _pos in pickletools.genops(stream):
            pass
    start = stream.tell()
    for _op, _arg, _pos in pickletools.genops(stream):
        pass
    end = stream.tell()
    return data[:start] + sys_info_pickle + data[end:] + trailing


def legacy_tar(pickle_member: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        storages = (
            pickle.dumps(1, protocol=2)
            + pickle.dumps(("0", "cpu", torch.FloatStorage), protocol=2)
            + struct.pack("<q", 3)
            + struct.pack("<3f", 1, 2, 3)
            + pickle.dumps([], protocol=2)
        )
        tensors = pickle.dumps(0, protocol=2)
        for name, payload in (
            (
                "sys_info",
                pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
            ),
            ("storages", storages),
            ("tensors", tensors),
            ("pickle", pickle_member),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def onnx_model(path: Path, *, domain: str = "", external: str | None = None) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    if external is not None:
        w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2])
        w.data_location = TensorProto.EXTERNAL
        entry = w.external_data.add()
        entry.key, entry.value = "location", external
    node = helper.make_node("Add" if not domain else "EvilOp", ["x", "w"], ["y"], domain=domain)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [w]), opset_imports=opsets)
    path.write_bytes(model.SerializeToString())
    del onnx


def keras_zip(path: Path, *, with_lambda: bool) -> None:
    layers = [
        {"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "units": 2}}
    ]
    if with_lambda:
        layers.append(
            {
                "module": "keras.layers",
                "class_name": "Lambda",
                "config": {
                    "name": "evil",
                    "function": {"class_name": "__lambda__", "config": {"code": "4wEAAAA="}},
                },
            }
        )
    config = {"module": "keras", "class_name": "Sequential", "config": {"layers": layers}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)


# -- the corpus -------------------------------------------------------------------------------
Builder = Callable[[Path, str], None]


def _w(data: bytes) -> Builder:
    def build(path: Path, canary: str) -> None:
        path.write_bytes(data)

    return build


def build_corpus(root: Path) -> dict[str, str]:
    """Write the corpus under ``root``; return ``{relative path: expected verdict}``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "review").mkdir(exist_ok=True)
    canary = str(root / CANARY)
    expected: dict[str, str] = {}

    def put(rel: str, data: bytes, verdict: str) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        expected[rel] = verdict

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    sd = model.state_dict()
    # benign ---------------------------------------------------------------------------
    put("benign/state_dict.pt", _torch_zip(sd), "safe")
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    put(
        "benign/checkpoint.ckpt",
        _torch_zip({"model": sd, "optimizer": opt.state_dict(), "epoch": 3, "name": "run-1"}),
        "safe",
    )
    put("benign/legacy_state_dict.pth", legacy_torch_with(), "safe")
    put("benign/legacy.tar", legacy_tar(pickle.dumps({"w": [1, 2, 3]}, protocol=2)), "safe")
    buf = io.BytesIO()
    np.save(buf, np.arange(12, dtype=np.float32).reshape(3, 4))
    put("benign/array.npy", buf.getvalue(), "safe")
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.ones((4, 4)), b=np.arange(5))
    put("benign/arrays.npz", buf.getvalue(), "safe")
    from safetensors.torch import save as st_save

    put("benign/model.safetensors", st_save({k: v.contiguous() for k, v in sd.items()}), "safe")
    for proto in range(6):
        put(
            f"benign/plain_p{proto}.pkl",
            pickle.dumps({"a": [1, 2.5, None], "b": (3, "x"), "c": {1, 2}}, protocol=proto),
            "safe",
        )
    import joblib

    joblib.dump(
        {"w": np.arange(6, dtype=np.float64).reshape(2, 3), "names": ["a", "b"]},
        root / "benign/arrays.joblib",
    )
    expected["benign/arrays.joblib"] = "safe"
    ep = torch.export.export(model, (torch.randn(1, 4),))
    torch.export.save(ep, root / "benign/model.pt2")
    expected["benign/model.pt2"] = "safe"
    (root / "benign/config.json").write_text(json.dumps({"hidden": 3}))
    expected["benign/config.json"] = "safe"
    keras_zip(root / "benign/model.keras", with_lambda=False)
    expected["benign/model.keras"] = "safe"
    has_onnx = importlib.util.find_spec("onnx") is not None  # the optional 'onnx' extra
    if has_onnx:
        onnx_model(root / "benign/model.onnx")
        expected["benign/model.onnx"] = "safe"

    # needs review: TorchScript code runs on torch.jit.load
    traced = torch.jit.trace(torch.nn.Linear(4, 2), torch.randn(1, 4))
    torch.jit.save(traced, str(root / "review/torchscript.pt"))
    expected["review/torchscript.pt"] = "suspicious"

    # malicious: point 1 techniques ----------------------------------------------------------
    put("evil/p0_global.pkl", p0_global_open(canary), "unsafe")
    put("evil/p0_inst.pkl", p0_inst_open(canary), "unsafe")
    put("evil/p1_obj.pkl", p1_obj_open(canary), "unsafe")
    put("evil/p4_stack_global_memo.pkl", p4_stack_global_memo(canary), "unsafe")
    put("evil/p4_dotted.pkl", p4_dotted_name(canary), "unsafe")
    put("evil/p2_getattr_chain.pkl", p2_getattr_chain(canary), "unsafe")
    put("evil/p2_newobj.pkl", p2_newobj(), "unsafe")
    put("evil/p4_newobj_ex.pkl", p4_newobj_ex(), "unsafe")
    put("evil/p2_build_on_global.pkl", p2_build_on_global(), "unsafe")
    put("evil/p2_ext.pkl", p2_ext(), "suspicious")
    for proto in range(6):
        put(f"evil/reduce_p{proto}.pkl", evil_pickle(canary, proto), "unsafe")
    put(
        "evil/second_pickle.pkl",
        pickle.dumps({"ok": 1}, protocol=2) + evil_pickle(canary, 2),
        "unsafe",
    )
    put(
        "evil/legacy_sys_info.pth",
        legacy_torch_with(sys_info_pickle=evil_pickle(canary, 2)),
        "unsafe",
    )
    put("evil/legacy_trailing.pth", legacy_torch_with(trailing=evil_pickle(canary, 2)), "unsafe")
    put("evil/legacy.tar", legacy_tar(evil_pickle(canary, 2)), "unsafe")
    put("evil/model.bin", _torch_zip({"w": torch.ones(2), "payload": Evil(canary)}), "unsafe")
    put("evil/unknown_global.pt", _torch_zip({"w": torch.ones(2), "ns": _Unlisted()}), "suspicious")
    buf = io.BytesIO()
    np.save(buf, np.array([Evil(canary)], dtype=object), allow_pickle=True)
    put("evil/object_array.npy", buf.getvalue(), "unsafe")
    buf = io.BytesIO()
    np.savez(buf, ok=np.ones(3), evil=np.array([Evil(canary)], dtype=object))
    put("evil/object_member.npz", buf.getvalue(), "unsafe")
    import joblib

    joblib.dump({"w": np.ones(4), "payload": Evil(canary)}, root / "evil/model.joblib")
    expected["evil/model.joblib"] = "unsafe"
    # a .pt2 with a pickled constant that runs code
    with (
        zipfile.ZipFile(root / "benign/model.pt2") as src,
        zipfile.ZipFile(root / "evil/model.pt2", "w") as dst,
    ):
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("model/data/constants/custom_obj_0.pt", evil_pickle(canary, 2))
    expected["evil/model.pt2"] = "unsafe"
    keras_zip(root / "evil/lambda.keras", with_lambda=True)
    expected["evil/lambda.keras"] = "unsafe"
    put(
        "evil/lambda.h5",
        b"\x89HDF\r\n\x1a\n"
        + b"\x00" * 32
        + b'{"class_name": "Sequential", "config": {"layers": [{"class_name": "Lambda"}]}}',
        "unsafe",
    )
    if has_onnx:
        onnx_model(root / "evil/traversal.onnx", external="../../../etc/passwd")
        expected["evil/traversal.onnx"] = "unsafe"
        onnx_model(root / "evil/custom_op.onnx", domain="com.evil.ops")
        expected["evil/custom_op.onnx"] = "suspicious"
    put(
        "evil/weights.dat",
        b"\x13\x37WEIGHTS\x00" + bytes(range(200)) + evil_pickle(canary, 4) + bytes(64),
        "unsafe",
    )

    # malicious or broken: point 3 (fail closed) -------------------------------------------------
    good = _torch_zip(sd)
    put("broken/name_mismatch.pt", zip_local_name_mismatch(good), "unreadable")
    put("broken/bad_crc.pt", zip_bad_crc(good), "unreadable")
    put("broken/encrypted_flag.pt", zip_encrypted_flag(good), "unreadable")
    put("broken/truncated.pt", good[: len(good) // 2], "unreadable")
    put("broken/truncated.pkl", evil_pickle(canary, 4)[:-10], "unsafe")
    put("broken/truncated_benign.pkl", pickle.dumps(list(range(50)), protocol=4)[:-5], "unreadable")
    put("broken/polyglot.pt", evil_pickle(canary, 2) + good, "unsafe")
    put("broken/zip_bomb.pt", zip_bomb(), "unreadable")
    put("broken/legacy_truncated.pth", legacy_torch_with()[:-8], "unreadable")
    st = st_save({"w": torch.ones(2, 2)})
    put("broken/trailing.safetensors", st + b"\x00" * 16, "unreadable")
    return expected


class _Unlisted:
    """A class that is neither known-safe nor known-dangerous: to be reviewed."""


# == corpus v2: bypass techniques from public advisories, and files real users have =========
# Every malicious file only ever creates the canary (open(canary, 'w'), Path.touch, or a
# shell 'touch' of the canary path). Each builder names its source.
def _torch_zip_with_pickle(pickle_bytes: bytes, *, rename: str | None = None) -> bytes:
    """A torch.save zip whose data.pkl is replaced (and optionally renamed)."""
    src = zipfile.ZipFile(io.BytesIO(_torch_zip({"w": torch.ones(2)})))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            name = info.filename
            if name.endswith("/data.pkl"):
                data = pickle_bytes
                if rename is not None:
                    name = name[: -len("data.pkl")] + rename
            dst.writestr(name, data)
    return out.getvalue()


def strip_proto(data: bytes) -> bytes:
    """pickle.load needs no PROTO opcode: a protocol 4 pickle without it starts with FRAME."""
    assert data[:1] == b"\x80"
    return data[2:]


def gguf_file(kv: dict[str, object], tensors: int = 1) -> bytes:
    """A minimal little-endian GGUF v3 (ggml docs/gguf.md): metadata, tensor infos, data."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    body = b""
    for key, value in kv.items():
        body += s(key)
        if isinstance(value, str):
            body += struct.pack("<I", 8) + s(value)
        elif isinstance(value, list):  # array of strings (tokenizer.ggml.tokens)
            body += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(s(v) for v in value)
        else:
            body += struct.pack("<II", 4, int(value))  # uint32
    infos = b""
    for i in range(tensors):
        infos += s(f"blk.{i}.weight") + struct.pack("<I", 1) + struct.pack("<Q", 4)
        infos += struct.pack("<IQ", 0, i * 32)  # F32, offset
    head = b"GGUF" + struct.pack("<IQQ", 3, tensors, len(kv)) + body + infos
    head += b"\x00" * (-len(head) % 32)
    return head + b"\x00" * (32 * tensors)


def _tar_with(members: list[tuple[str, bytes]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def tar_v7(data: bytes) -> bytes:
    """Turn a ustar archive into a pre-POSIX v7 one: no magic, checksum recomputed.
    tarfile (and so torch's _legacy_load) still reads it."""
    out = bytearray(data)
    pos = 0
    while pos + 512 <= len(out) and any(out[pos : pos + 512]):
        out[pos + 257 : pos + 265] = b"\x00" * 8  # magic + version
        out[pos + 148 : pos + 156] = b" " * 8
        chk = sum(out[pos : pos + 512])
        out[pos + 148 : pos + 156] = b"%06o\x00 " % chk
        size = int(out[pos + 124 : pos + 136].rstrip(b"\x00 ") or b"0", 8)
        pos += 512 + (size + 511) // 512 * 512
    return bytes(out)


def keras_archive(config: dict, *, metadata: bool = True, raw: bytes | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        if metadata:
            zf.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        zf.writestr("config.json", raw if raw is not None else json.dumps(config))
        zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    return out.getvalue()


def _lambda_layer(name: str = "evil") -> dict:
    return {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {"name": name, "function": {"class_name": "__lambda__", "config": {}}},
    }


def _sequential(layers: list[dict]) -> dict:
    return {"module": "keras", "class_name": "Sequential", "config": {"layers": layers}}


class EvilJoblib:
    """A joblib payload: touching the canary is all it does."""

    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.canary),))


def build_corpus_v2(root: Path) -> dict[str, str]:
    """Write the v2 corpus; return ``{relative path: 'malicious' | 'benign'}``."""
    import gzip

    import joblib

    for sub in ("mal", "ok"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    canary = str(root / CANARY)
    kinds: dict[str, str] = {}

    def put(rel: str, data: bytes, kind: str) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        kinds[rel] = kind

    evil2 = evil_pickle(canary, 2)
    evil4 = evil_pickle(canary, 4)

    # -- pickles that do not start with PROTO, under any name ----------------------------
    # Issue #13 / ModelAudit PR #624 ("detect proto0/1 pickles inside zip entries"):
    # protocol 0/1 pickles were not recognised outside .pkl names.
    put("mal/p0_named.bin", p0_global_open(canary), "malicious")
    put("mal/p1_binary.npy", evil_pickle(canary, 1), "malicious")
    put("mal/p0_named.txt", p0_inst_open(canary), "malicious")
    put("mal/p4_no_proto.dat", strip_proto(evil4), "malicious")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("notes/payload.txt", p0_global_open(canary))
    put("mal/zip_member_p0.zip", zbuf.getvalue(), "malicious")

    # -- torch.load's record lookup (first entry's folder, case-insensitive miniz) -------
    # Loader-scanner differential constructed from caffe2/serialize/inline_container.cc
    # (getRecordID -> mz_zip_reader_locate_file(..., flags=0), case-insensitive).
    put(
        "mal/torch_upper_DATA_PKL.pt", _torch_zip_with_pickle(evil2, rename="DATA.PKL"), "malicious"
    )
    put(
        "mal/torch_data_pkl_renamed.bin",
        _torch_zip_with_pickle(p0_global_open(canary)),
        "malicious",
    )

    # -- compression the way joblib detects it (joblib/compressor.py prefixes) -----------
    # Issue #13: zlib and lzma joblib files were never opened ("format not recognised").
    for comp in ("zlib", "gzip", "bz2", "lzma", "xz"):
        joblib.dump(
            {"w": np.ones(3), "p": EvilJoblib(canary)},
            root / f"mal/joblib_{comp}.joblib",
            compress=(comp, 3),
        )
        kinds[f"mal/joblib_{comp}.joblib"] = "malicious"
    joblib.dump({"p": EvilJoblib(canary)}, root / "mal/joblib_p1.pkl", protocol=1)
    kinds["mal/joblib_p1.pkl"] = "malicious"
    # Issue #13: array byte lengths computed differently from joblib's read_array skipped
    # the nested pickle of a record array with an object field as raw data.
    rec = np.array([(1.0, EvilJoblib(canary))], dtype=[("a", "<f8"), ("b", "O")])
    joblib.dump(rec, root / "mal/joblib_record_object.joblib")
    kinds["mal/joblib_record_object.joblib"] = "malicious"
    put("mal/zlib_pickle.bin", __import__("zlib").compress(evil2), "malicious")
    put("mal/joblib_elsize_lie.joblib", joblib_elsize_lie(canary), "malicious")
    # gzip.GzipFile reads concatenated members as one stream: a pickle split across two
    # members looks truncated and harmless to a single-member reader.
    half = len(evil2) // 2
    put(
        "mal/gzip_split.pkl.gz",
        gzip.compress(evil2[:half]) + gzip.compress(evil2[half:]),
        "malicious",
    )

    # -- tar in every header variant (torch._legacy_load uses tarfile.open(mode='r:')) ---
    legacy = legacy_tar(evil2)
    put("mal/legacy_tar_gnu.tar", _tar_with(_tar_members(legacy), tarfile.GNU_FORMAT), "malicious")
    put(
        "mal/legacy_tar_v7.tar",
        tar_v7(_tar_with(_tar_members(legacy), tarfile.USTAR_FORMAT)),
        "malicious",
    )
    # tarfile.getmember returns the LAST member of a name; a first-match scanner sees the
    # benign copy (differential constructed from tarfile's getmember docs).
    members = _tar_members(legacy)
    benign_pickle = [("pickle", pickle.dumps({"w": 1}, protocol=2))]
    put(
        "mal/tar_duplicate_member.tar",
        _tar_with(benign_pickle + members, tarfile.PAX_FORMAT),
        "malicious",
    )

    # -- polyglots and hidden containers ------------------------------------------------------
    # saferpickle PR #46: a zip that starts with the spanned-archive marker PK\x07\x08
    # still opens in zipfile (it reads the end record).
    put("mal/zip_spanned_marker.zip", b"PK\x07\x08" + _torch_zip({"p": Evil(canary)}), "malicious")
    # Issue #13: a valid safetensors header can frame tensor bytes that are another
    # container; zipfile-based loaders find the zip by its end record.
    from safetensors.torch import save as st_save

    inner = _torch_zip({"p": Evil(canary)})
    st = st_save({"blob": torch.frombuffer(bytearray(inner), dtype=torch.uint8)})
    put("mal/safetensors_hides_zip.safetensors", st, "malicious")
    # CVE-2025-32434 write-ups: payload first, then bytes that break the structure so that
    # a scanner gives up after the code already ran.
    put("mal/payload_then_garbage.pt", evil2[:-1] + bytes(range(256)) * 4, "malicious")

    # -- pickle import tricks (all resolve to a canary write) ------------------------------
    # GHSA-vvpj-8cmc-gx39 (picklescan): pkgutil.resolve_name reaches any callable.
    put(
        "mal/pkgutil_resolve.pkl",
        b"\x80\x02cpkgutil\nresolve_name\nX\x0c\x00\x00\x00builtins:open\x85R("
        + _uni0(canary)
        + _uni0("w")
        + b"tR.",
        "malicious",
    )
    # picklescan PR #74: importlib.import_module + getattr.
    put(
        "mal/importlib_getattr.pkl",
        b"\x80\x02cbuiltins\ngetattr\n(cimportlib\nimport_module\n("
        + _uni0("builtins")
        + b"tR"
        + _uni0("open")
        + b"tR("
        + _uni0(canary)
        + _uni0("w")
        + b"tR.",
        "malicious",
    )
    # modelscan #338: torch.utils.collect_env.run runs a shell command.
    put(
        "mal/collect_env_run.pkl",
        b"\x80\x02ctorch.utils.collect_env\nrun\n(" + _uni0(f"touch '{canary}'") + b"tR.",
        "malicious",
    )
    # modelscan #330: BUILD on an allowlisted numpy global smuggles __builtins__.
    put(
        "mal/numpy_build_builtins.pkl",
        b"\x80\x02cnumpy\nsize\n}" + _uni0("x") + b"cnumpy\n__builtins__\nsb.",
        "malicious",
    )
    # modelscan #267: a nested pickle.loads.
    put(
        "mal/nested_loads.pkl",
        b"\x80\x02c_pickle\nloads\nC"
        + bytes([len(p0_global_open(canary))])
        + p0_global_open(canary)
        + b"\x85R.",
        "malicious",
    )

    # -- .pt2: members judged by content -----------------------------------------------------
    ep = torch.export.export(torch.nn.Linear(2, 2), (torch.randn(1, 2),))
    torch.export.save(ep, root / "tmp.pt2")
    src = zipfile.ZipFile(root / "tmp.pt2")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr(
            src.namelist()[0].split("/")[0] + "/extra/helper.json",
            b"\x7fELF\x02\x01\x01" + b"\x00" * 57,
        )
    put("mal/pt2_elf_named_json.pt2", out.getvalue(), "malicious")
    src.close()
    src = zipfile.ZipFile(root / "tmp.pt2")  # writestr(info) moved the infos' offsets
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("sample_inputs/model.pt"):
                data = _torch_zip({"p": Evil(canary)})
            dst.writestr(info, data)
    put("mal/pt2_evil_sample_inputs.pt2", out.getvalue(), "malicious")
    src.close()
    (root / "tmp.pt2").unlink()

    # -- Keras: parsed JSON, any spelling, with or without metadata.json ---------------------
    # Issue #13: a .keras zip without metadata.json was not inspected.
    put(
        "mal/keras_no_metadata.keras",
        keras_archive(_sequential([_lambda_layer()]), metadata=False),
        "malicious",
    )
    # Issue #13: other JSON spellings of "class_name" slipped past a regular expression.
    escaped = json.dumps(_sequential([_lambda_layer()])).replace(
        '"class_name": "Lambda"', '"\\u0063lass_name" : "Lambda"'
    )
    put("mal/keras_escaped_key.keras", keras_archive({}, raw=escaped.encode()), "malicious")
    nested = _sequential(
        [
            {
                "module": "keras",
                "class_name": "Functional",
                "config": {"layers": [_sequential([_lambda_layer("deep")])]},
            }
        ]
    )
    put("mal/keras_nested_model.keras", keras_archive(nested), "malicious")
    # CVE-2025-1550 (Keras safe_mode bypass): config.json names a module function.
    fn = {
        "module": "builtins",
        "class_name": "function",
        "config": "exec",
        "registered_name": "function",
    }
    put(
        "mal/keras_module_function.keras",
        keras_archive(
            _sequential(
                [
                    {
                        "module": "keras.layers",
                        "class_name": "Dense",
                        "config": {"name": "d", "activation": fn},
                    }
                ]
            )
        ),
        "malicious",
    )
    h5_json = json.dumps(_sequential([_lambda_layer()]), separators=(",", " : ")).encode()
    put(
        "mal/keras_h5_spacing.h5",
        b"\x89HDF\r\n\x1a\n" + b"\x00" * 40 + h5_json + b"\x00" * 8,
        "malicious",
    )
    put(
        "mal/keras_h5_userblock.h5",
        b"\x00" * 512 + b"\x89HDF\r\n\x1a\n" + b"\x00" * 40 + h5_json + b"\x00",
        "malicious",
    )

    # -- GGUF chat templates: CVE-2024-34359 (llama-cpp-python, unsandboxed Jinja) ------------
    ssti = (
        "{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in "
        "x.__name__ %}{{ x()._module.__builtins__['open']('" + canary + "', 'w') }}"
        "{% endif %}{% endfor %}"
    )
    put(
        "mal/gguf_ssti.gguf",
        gguf_file({"general.architecture": "llama", "tokenizer.chat_template": ssti}),
        "malicious",
    )
    obfuscated = (
        "{{ (cycler|attr('\\x5f\\x5finit\\x5f\\x5f')|attr('\\x5f\\x5fglobals"
        "\\x5f\\x5f')).os.popen('touch " + canary + "') }}"
    )
    put(
        "mal/gguf_ssti_obfuscated.gguf",
        gguf_file({"tokenizer.chat_template.tool_use": obfuscated}),
        "malicious",
    )
    put(
        "mal/tokenizer_config.json",
        json.dumps({"chat_template": "{{ ('_' * 2 ~ 'class' ~ '_' * 2) }}"}).encode(),
        "malicious",
    )

    # -- benign files real users have -----------------------------------------------------------
    arrays = {"w": np.arange(6, dtype=np.float64).reshape(2, 3), "names": ["a", "b"]}
    records = np.zeros(3, dtype=[("x", "<f4"), ("y", "<i8", (2,))])
    for proto in range(6):
        joblib.dump(arrays, root / f"ok/joblib_p{proto}.joblib", protocol=proto)
        kinds[f"ok/joblib_p{proto}.joblib"] = "benign"
        joblib.dump(records, root / f"ok/joblib_records_p{proto}.joblib", protocol=proto)
        kinds[f"ok/joblib_records_p{proto}.joblib"] = "benign"
    for comp in ("zlib", "gzip", "bz2", "lzma", "xz"):
        joblib.dump(arrays, root / f"ok/joblib_{comp}.joblib", compress=(comp, 3))
        kinds[f"ok/joblib_{comp}.joblib"] = "benign"
    buf = io.BytesIO()
    np.save(buf, records)
    put("ok/records.npy", buf.getvalue(), "benign")
    model = torch.nn.Linear(3, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    sgd.step()
    sched = torch.optim.lr_scheduler.StepLR(sgd, step_size=2)
    put(
        "ok/optimizer.pt",
        _torch_zip(
            {
                "model": model.state_dict(),
                "optim": sgd.state_dict(),
                "sched": sched.state_dict(),
                "step": 10,
            }
        ),
        "benign",
    )
    put(
        "ok/tokenizer.json",
        json.dumps(
            {"version": "1.0", "model": {"type": "WordPiece", "vocab": {"[PAD]": 0, "hello": 1}}}
        ).encode(),
        "benign",
    )
    put("ok/vocab.txt", b"[PAD]\n[UNK]\nhello\n##lo\n", "benign")
    put("ok/README.md", "# Model card\n\nN.B. trained on ünïcode text.\n".encode(), "benign")
    put("ok/NOTES", b"N.B. this file starts like a pickle (NONE, STOP) but is text.\n", "benign")
    put("ok/Copyright", b"Copyright 2024 the authors. Licensed under Apache-2.0.\n", "benign")
    put(
        "ok/tokenizer_config.json",
        json.dumps(
            {
                "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}"
                "<|im_start|>assistant\n{% endif %}",
                "model_max_length": 512,
            }
        ).encode(),
        "benign",
    )
    put(
        "ok/no_template.gguf",
        gguf_file(
            {
                "general.architecture": "llama",
                "general.alignment": 32,
                "tokenizer.ggml.tokens": ["<s>", "</s>", "a"],
            }
        ),
        "benign",
    )
    put(
        "ok/chatml_template.gguf",
        gguf_file(
            {
                "tokenizer.chat_template": "{% for message in messages %}{{ '<|im_start|>' "
                "+ message['role'] + '\\n' + "
                "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
            }
        ),
        "benign",
    )
    put(
        "ok/legacy_tar_gnu.tar",
        _tar_with(
            _tar_members(legacy_tar(pickle.dumps({"w": [1]}, protocol=2))), tarfile.GNU_FORMAT
        ),
        "benign",
    )
    put(
        "ok/keras_no_metadata.keras",
        keras_archive(
            _sequential(
                [
                    {
                        "module": "keras.layers",
                        "class_name": "Dense",
                        "config": {"name": "d", "units": 2},
                    }
                ]
            ),
            metadata=False,
        ),
        "benign",
    )
    put(
        "ok/state_dict.pkl.gz", gzip.compress(pickle.dumps({"w": [1.0, 2.0]}, protocol=4)), "benign"
    )
    put(
        "ok/with_meta.safetensors",
        st_save({"w": torch.ones(2, 2)}, metadata={"format": "pt"}),
        "benign",
    )
    return kinds


def joblib_elsize_lie(canary: str) -> bytes:
    """A joblib file whose float64 dtype state claims elsize 40. numpy ignores elsize for
    non-flexible dtypes (checked: dtype('f8') keeps itemsize 8), so joblib reads the 16
    array bytes and then runs the opcodes we insert after them; a scanner that trusts
    the state's elsize skips 80 bytes, over the payload. Constructed from
    joblib.numpy_pickle.NumpyArrayWrapper.read_array and numpy's arraydescr_setstate."""
    arr = np.arange(2.0)
    buf = io.BytesIO()
    import joblib

    joblib.dump({"w": arr, "z": 0}, buf, protocol=2)
    data = buf.getvalue()
    state = b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"
    at = data.index(arr.tobytes()) + 16
    payload = b"cbuiltins\nopen\n(" + _uni0(canary) + _uni0("w") + b"tR0"
    if len(payload) % 2:  # an even length: two array items of `elsize` bytes cover it
        payload += b"K\x000"  # BININT1 0, POP: three bytes that do nothing
    elsize = (16 + len(payload)) // 2
    assert (16 + len(payload)) % 2 == 0 and elsize * 2 == 16 + len(payload)
    lied = state.replace(b"NNNJ\xff\xff\xff\xff", b"NNNJ" + struct.pack("<i", elsize), 1)
    data = data.replace(state, lied, 1)
    return data[:at] + payload + data[at:]


def sentencepiece_model(pieces: list[str]) -> bytes:
    """A SentencePiece ModelProto (sentencepiece_model.proto) written by hand."""

    def field(num: int, payload: bytes) -> bytes:
        n, out = len(payload), b""
        while True:
            out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                break
        return bytes([num << 3 | 2]) + out + payload

    body = b""
    for i, piece in enumerate(pieces):
        entry = field(1, piece.encode()) + b"\x15" + struct.pack("<f", -float(i)) + b"\x18\x01"
        body += field(1, entry)
    return body + field(2, b"\x08\x01") + field(3, field(1, b"nmt_nfkc"))


def _tar_members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
