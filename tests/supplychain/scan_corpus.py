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
