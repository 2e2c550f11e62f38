"""Which imports a pickle may make: an allowlist, a list of known-dangerous callables,
and "everything else must be reviewed".

An allowlist is the only sound policy for pickles (a denylist misses the next gadget,
as the bypasses of denylist scanners show: Trail of Bits, "Never a dill moment",
2024; JFrog, "PickleScan bypasses", 2025). The dangerous list only decides how loud
the finding is: `critical` for what is known to run code, `high` for the unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

__all__ = ["ImportClass", "Policy", "classify_import"]


class ImportClass(str, Enum):
    SAFE = "safe"
    DANGEROUS = "dangerous"
    UNKNOWN = "unknown"


_TORCH_REBUILDERS = {
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_qtensor",
    "_rebuild_sparse_tensor",
    "_rebuild_sparse_csr_tensor",
    "_rebuild_device_tensor_from_numpy",
    "_rebuild_device_tensor_from_cpu_tensor",
    "_rebuild_meta_tensor_no_storage",
    "_rebuild_wrapper_subclass",
    "_rebuild_nested_tensor",
}
_TORCH_STORAGES = {
    f"{p}Storage"
    for p in (
        "Float",
        "Double",
        "Half",
        "BFloat16",
        "Long",
        "Int",
        "Short",
        "Char",
        "Byte",
        "Bool",
        "ComplexFloat",
        "ComplexDouble",
        "QInt8",
        "QUInt8",
        "QInt32",
        "QUInt4x2",
        "QUInt2x4",
        "Untyped",
        "Typed",
    )
}
_TORCH_DTYPES = {
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "int64",
    "long",
    "int32",
    "int",
    "int16",
    "short",
    "int8",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "complex64",
    "cfloat",
    "complex128",
    "cdouble",
    "complex32",
    "chalf",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "bits8",
    "bits16",
    # layouts, memory formats and quantisation schemes pickled as torch attributes
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "jagged",
    "contiguous_format",
    "channels_last",
    "channels_last_3d",
    "preserve_format",
    "per_tensor_affine",
    "per_channel_affine",
    "per_tensor_symmetric",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
    "Size",
    "device",
    "dtype",
    "layout",
    "memory_format",
    "Tensor",
}
_NUMPY_DTYPE_CLASSES = {
    f"{n}DType"
    for n in (
        "Bool",
        "Int8",
        "UInt8",
        "Int16",
        "UInt16",
        "Int32",
        "UInt32",
        "Int64",
        "UInt64",
        "Float16",
        "Float32",
        "Float64",
        "LongDouble",
        "Complex64",
        "Complex128",
        "CLongDouble",
        "Bytes",
        "Str",
        "Void",
        "DateTime64",
        "TimeDelta64",
        "Byte",
        "UByte",
        "Short",
        "UShort",
        "Int",
        "UInt",
        "Long",
        "ULong",
        "LongLong",
        "ULongLong",
        "Half",
        "Float",
        "Double",
        "CFloat",
        "CDouble",
        "Object",
    )
}

#: module -> names that are safe to import (``"*"``: every name of the module).
SAFE_IMPORTS: dict[str, frozenset[str]] = {
    "torch._utils": frozenset(_TORCH_REBUILDERS),
    "torch": frozenset(_TORCH_STORAGES | _TORCH_DTYPES),
    "torch.storage": frozenset({"UntypedStorage", "TypedStorage", "_TypedStorage"}),
    "torch.nn.parameter": frozenset({"Parameter", "Buffer"}),
    "torch._tensor": frozenset({"_rebuild_from_type_v2"}),
    "torch.serialization": frozenset({"_get_layout"}),
    "torch.nn.modules.module": frozenset({"_IncompatibleKeys"}),
    "collections": frozenset({"OrderedDict", "defaultdict", "Counter", "deque"}),
    "builtins": frozenset(
        {
            "set",
            "frozenset",
            "slice",
            "complex",
            "range",
            "bytearray",
            "bytes",
            "tuple",
            "list",
            "dict",
            "int",
            "float",
            "bool",
            "str",
            "object",
        }
    ),
    "__builtin__": frozenset(
        {"set", "frozenset", "slice", "complex", "object", "unicode", "bytes", "bytearray", "range"}
    ),
    "copy_reg": frozenset({"_reconstructor"}),
    "copyreg": frozenset({"_reconstructor"}),
    "_codecs": frozenset({"encode"}),
    "numpy": frozenset(
        {
            "ndarray",
            "dtype",
            "float64",
            "float32",
            "float16",
            "int64",
            "int32",
            "int16",
            "int8",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "bool_",
            "complex64",
            "complex128",
            "str_",
            "bytes_",
            "void",
        }
    ),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy.dtypes": frozenset(_NUMPY_DTYPE_CLASSES),
    "datetime": frozenset({"datetime", "date", "time", "timedelta", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "fractions": frozenset({"Fraction"}),
    "uuid": frozenset({"UUID"}),
    "pathlib": frozenset({"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"}),
    "argparse": frozenset({"Namespace"}),
    # joblib's wrapper only records shape/dtype; the array bytes follow it inline and
    # are sized by the reader (`pickle_reader._skip_joblib_array`)
    "joblib.numpy_pickle": frozenset({"NumpyArrayWrapper"}),
    # list builders of TorchScript archives' pickles (torch/jit/_pickle.py)
    "torch.jit._pickle": frozenset(
        {
            "build_intlist",
            "build_floatlist",
            "build_doublelist",
            "build_boollist",
            "build_tensorlist",
            "build_complexlist",
            "restore_type_tag",
        }
    ),
}

_ANY = frozenset({"*"})

#: module -> names that are known to run code, touch files/network or import things.
DANGEROUS_IMPORTS: dict[str, frozenset[str]] = {
    "builtins": frozenset(
        {
            "eval",
            "exec",
            "compile",
            "open",
            "__import__",
            "getattr",
            "setattr",
            "delattr",
            "globals",
            "locals",
            "vars",
            "breakpoint",
            "input",
            "help",
            "exit",
            "quit",
            "memoryview",
            "type",
            "classmethod",
            "staticmethod",
            "super",
        }
    ),
    "__builtin__": frozenset(
        {
            "eval",
            "exec",
            "execfile",
            "compile",
            "open",
            "file",
            "__import__",
            "getattr",
            "setattr",
            "input",
            "raw_input",
            "reload",
            "globals",
            "locals",
            "vars",
        }
    ),
    "os": _ANY,
    "posix": _ANY,
    "nt": _ANY,
    "posixpath": _ANY,
    "ntpath": _ANY,
    "subprocess": _ANY,
    "_posixsubprocess": _ANY,
    "pty": _ANY,
    "sys": _ANY,
    "shutil": _ANY,
    "socket": _ANY,
    "_socket": _ANY,
    "ssl": _ANY,
    "select": _ANY,
    "selectors": _ANY,
    "asyncio": _ANY,
    "multiprocessing": _ANY,
    "torch.utils.collect_env": _ANY,  # run(): a shell command (modelscan issue #338)
    "threading": _ANY,
    "_thread": _ANY,
    "signal": _ANY,
    "ctypes": _ANY,
    "_ctypes": _ANY,
    "cffi": _ANY,
    "importlib": _ANY,
    "imp": _ANY,
    "pkgutil": _ANY,
    "zipimport": _ANY,
    "runpy": _ANY,
    "code": _ANY,
    "codeop": _ANY,
    "pdb": _ANY,
    "bdb": _ANY,
    "pydoc": _ANY,
    "profile": _ANY,
    "cProfile": _ANY,
    "_lsprof": _ANY,
    "trace": _ANY,
    "timeit": _ANY,
    "doctest": _ANY,
    "webbrowser": _ANY,
    "urllib": _ANY,
    "urllib2": _ANY,
    "http": _ANY,
    "httplib": _ANY,
    "ftplib": _ANY,
    "smtplib": _ANY,
    "telnetlib": _ANY,
    "poplib": _ANY,
    "imaplib": _ANY,
    "xmlrpc": _ANY,
    "requests": _ANY,
    "httpx": _ANY,
    "aiohttp": _ANY,
    "urllib3": _ANY,
    "pickle": _ANY,
    "_pickle": _ANY,
    "cPickle": _ANY,
    "dill": _ANY,
    "cloudpickle": _ANY,
    "marshal": _ANY,
    "shelve": _ANY,
    "types": _ANY,
    "functools": frozenset({"partial", "reduce"}),
    "operator": frozenset({"attrgetter", "methodcaller", "itemgetter", "getitem", "call"}),
    "inspect": _ANY,
    "gc": _ANY,
    "tempfile": _ANY,
    "glob": _ANY,
    "io": _ANY,
    "_io": _ANY,
    "fileinput": _ANY,
    "zipfile": _ANY,
    "tarfile": _ANY,
    "sqlite3": _ANY,
    "logging": _ANY,
    "venv": _ANY,
    "ensurepip": _ANY,
    "pip": _ANY,
    "setuptools": _ANY,
    "distutils": _ANY,
    "platform": _ANY,
    "sysconfig": _ANY,
    "builtins.__dict__": _ANY,
    "site": _ANY,
    "numpy.testing._private.utils": frozenset({"runstring"}),
    "numpy": frozenset({"load", "fromfile", "loadtxt", "save", "savez"}),
    "torch": frozenset({"load", "save", "compile", "jit", "hub", "ops", "_C", "_dynamo"}),
    "torch.serialization": frozenset({"load", "_load", "save", "_legacy_load"}),
    "torch.storage": frozenset({"_load_from_bytes"}),
    "torch.hub": _ANY,
    "torch.jit": _ANY,
    "torch._dynamo": _ANY,
    "torch._inductor": _ANY,
    "torch.utils.cpp_extension": _ANY,
    "torch._ops": _ANY,
    "torch.ops": _ANY,
    "joblib": frozenset({"load"}),
    "joblib.numpy_pickle": frozenset({"load"}),
    "keras.src.saving.serialization_lib": _ANY,
    "tensorflow": _ANY,
}

#: names that are dangerous whatever module spells them (defence in depth against aliases,
#: e.g. ``torch.serialization.os.system`` or a third-party module that re-exports ``eval``).
DANGEROUS_NAMES = frozenset(
    {
        "eval",
        "exec",
        "execfile",
        "compile",
        "system",
        "popen",
        "popen2",
        "spawn",
        "spawnl",
        "spawnv",
        "execv",
        "execve",
        "execl",
        "fork",
        "forkpty",
        "__import__",
        "import_module",
        "getattr",
        "setattr",
        "delattr",
        "__getattribute__",
        "__reduce__",
        "__reduce_ex__",
        "__setstate__",
        "__globals__",
        "__builtins__",
        "__code__",
        "__subclasses__",
        "check_output",
        "check_call",
        "run_path",
        "run_module",
        "Popen",
        "call",
        "loads",
        "load",
        "remove",
        "unlink",
        "rmtree",
        "rmdir",
        "urlopen",
        "urlretrieve",
        "CodeType",
        "FunctionType",
        "LambdaType",
        "runstring",
        "runctx",
        "runcall",
        "pager",
        "pipepager",
        "tempfilepager",
        "timeit",
        "breakpoint",
        "set_trace",
        "interact",
        "write_text",
        "write_bytes",
        "touch",
        "mkdir",
        "chmod",
        "symlink_to",
        "open",
        "system_call",
        "create_connection",
        "socket",
    }
)


def _split(module: str, name: str) -> list[str]:
    return [p for p in f"{module}.{name}".split(".") if p]


def classify_import(module: str, name: str, allow: Iterable[str] = ()) -> ImportClass:
    """Classify the global ``module``/``name`` of a pickle.

    Dotted names (protocol 4: ``name`` = ``b.c`` reaches attribute ``c`` of ``a.b``) are
    resolved attribute by attribute: every prefix of the full path is checked as a
    module against the dangerous list, and every component as a dangerous name.
    ``allow`` (``"module.name"`` or ``"module.*"``) accepts reviewed imports but never
    downgrades a known-dangerous callable.
    """
    parts = _split(module, name)
    if not parts:
        return ImportClass.DANGEROUS  # an empty name cannot be a reconstruction helper
    if "." not in name and name in SAFE_IMPORTS.get(module, ()):
        return ImportClass.SAFE  # curated exact names; never a prefix match
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        for attr in parts[i:]:
            names = DANGEROUS_IMPORTS.get(prefix)
            if names is not None and ("*" in names or attr in names):
                return ImportClass.DANGEROUS
    if any(p in DANGEROUS_NAMES for p in parts[1:]):
        return ImportClass.DANGEROUS
    if any(
        p.startswith("__") and p.endswith("__") and p not in ("__builtin__",) for p in parts[1:]
    ):
        return ImportClass.DANGEROUS  # dunder attribute chains reach globals and code
    dotted = ".".join(parts)
    for entry in allow:
        if entry == dotted or (entry.endswith(".*") and dotted.startswith(entry[:-1])):
            return ImportClass.SAFE
    return ImportClass.UNKNOWN


class Policy:
    """An import classifier with a memo: real checkpoints repeat the same few globals."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow = tuple(a.strip().replace(":", ".") for a in allow if a.strip())
        self._cache: dict[tuple[str, str], ImportClass] = {}

    def classify(self, module: str, name: str) -> ImportClass:
        key = (module, name)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = classify_import(module, name, self.allow)
        return found
