"""A strict stand-in for CuPy, built on NumPy, for the tests only (never imported by the package).

``install()`` puts this module in ``sys.modules["cupy"]`` (and a small ``cupyx`` with ``cupyx.profiler``) and
returns what was there, for ``uninstall``; ``tests/conftest.py`` does that around every ``gpu``-marked test on a
machine without a CUDA device, so those tests run the package's CuPy path on every CI run. Its ``ndarray`` holds
a NumPy array and refuses what CuPy refuses:

* implicit conversion to NumPy: ``__array__`` raises CuPy's ``TypeError`` ("Implicit conversion to a NumPy array
  is not allowed..."), so ``np.asarray(x)``, ``np.array(x)`` and anything that converts a device array fail;
* NumPy functions and ufuncs on a device array: ``np.exp(x)``, ``np.concatenate([x, y])``, ``np.sum(x)`` raise
  ``TypeError``. (Stricter than CuPy, which dispatches some of them to ``cupy.*`` through NEP 13/18: the house
  style writes ``xp.exp`` with ``xp = get_xp(...)``, and a ``np.`` call in the package is a bug either way.)
* mixing with NumPy arrays: ``x + np.ones(3)``, ``cupy.where(numpy_mask, x, 0.0)``, ``cupy.matmul(x, host)``
  raise ``TypeError`` as CuPy's "Unsupported type <class 'numpy.ndarray'>" does. Python scalars and NumPy
  scalars (``np.float64(1.0)``) are fine, as in CuPy.

Where CuPy accepts host data it does so here too, and says so in the counters below: ``cupy.asarray`` /
``cupy.array`` of host data, a NumPy or list index (``x[np.array([0, 2])]``) and a NumPy value assigned into a
device array are host->device copies.

Every ``cupy.<function>`` in ``FUNCTIONS`` (the NumPy functions CuPy also has that this project can reach)
takes device arrays and returns device arrays: reductions return 0-d device arrays, never Python or NumPy
scalars (``cupy.sum(x)``, ``cupy.count_nonzero(x)``, ``cupy.array_equal(a, b)``), as CuPy's do. A name CuPy
lacks, or that is not listed yet, is an ``AttributeError`` that says so.

Enough of ``cupy.cuda`` (``Device(i).id``, ``x.device.id``, ``Device().pci_bus_id``, ``runtime.getDeviceCount``,
``getDeviceProperties``, ``runtimeGetVersion``, ``driverGetVersion``, ``Event``, ``Stream``,
``get_elapsed_time``), of ``cupy.random`` and of ``cupyx.profiler.benchmark`` exists for ``mini_gumbel.backend``,
``mini_gumbel.timing.gpu_time``, ``bench/sec_cupy.py`` and notebook 11. Its "GPU times" are host clock readings
of NumPy code: they mean nothing, and nothing should be read into them.

Counting transfers. Every device->host transfer or synchronisation is counted: ``.get()``, ``cupy.asnumpy``,
``float()``, ``int()``, ``bool()``, ``operator.index``, ``.item()``, ``.tolist()``, ``repr``/``format`` of a device
array, and the operations whose output shape depends on the data (``cupy.flatnonzero``, ``nonzero``,
``argwhere``, ``unique``, boolean-mask indexing), which synchronise on a real GPU. Host->device copies are counted
too. ``with count_transfers() as t: ...`` gives ``t.d2h``, ``t.h2d`` (totals), ``t.kinds`` (a Counter of
``"d2h:bool"``, ``"h2d:asarray"``, ...) and ``t.log`` (each event with the line of code outside this module
that caused it), so a test can assert how many synchronisations one training step makes.
"""
from __future__ import annotations

import builtins
import contextlib
import sys
import time
import traceback
import types
from collections import Counter
from typing import NamedTuple

import numpy as np

__version__ = "0+numpy.standin"
IS_STANDIN = True  # real CuPy has no such attribute: tests read it to know which one they run on

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy "
            "array explicitly.")  # CuPy's message, word for word

inf, nan, pi, e, newaxis = np.inf, np.nan, np.pi, np.e, np.newaxis
(bool_, int8, int16, int32, int64, uint8, uint32, uint64, intp, float16, float32, float64, complex64,
 complex128) = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64, np.intp,
                np.float16, np.float32, np.float64, np.complex64, np.complex128)
dtype, finfo, iinfo, generic, floating, integer, number = (np.dtype, np.finfo, np.iinfo, np.generic, np.floating,
                                                           np.integer, np.number)
issubdtype, can_cast, promote_types, isscalar = np.issubdtype, np.can_cast, np.promote_types, np.isscalar

_HERE = __file__


# ---------------------------------------------------------------------------------------------------------
# counting transfers


class Event(NamedTuple):
    """One counted transfer: direction ("d2h" or "h2d"), kind ("get", "bool", "asarray", ...), the shape of
    the device array involved, and where it happened (the innermost frame outside this module)."""
    direction: str
    kind: str
    shape: tuple
    where: str


_LOG: list = []


def _caller() -> str:
    for fr in reversed(traceback.extract_stack()[:-2]):
        if fr.filename != _HERE:
            path = fr.filename.replace("\\", "/")
            short = "/".join(path.split("/")[-2:])
            return f"{short}:{fr.lineno} in {fr.name}"
    return "?"


def _count(direction: str, kind: str, shape=()):
    _LOG.append(Event(direction, kind, tuple(shape), _caller()))


class Transfers:
    """The transfers counted from its start (``count_transfers``), read while or after the block runs."""

    def __init__(self):
        self._start = len(_LOG)
        self._end = None

    @property
    def log(self) -> list:
        return _LOG[self._start:self._end]

    @property
    def d2h(self) -> int:
        return builtins.sum(ev.direction == "d2h" for ev in self.log)

    @property
    def h2d(self) -> int:
        return builtins.sum(ev.direction == "h2d" for ev in self.log)

    @property
    def kinds(self) -> Counter:
        return Counter(f"{ev.direction}:{ev.kind}" for ev in self.log)

    def report(self) -> str:
        """One line per distinct (direction, kind, where), with its count: for assertion messages."""
        c = Counter((ev.direction, ev.kind, ev.where) for ev in self.log)
        return "\n".join(f"  {n} x {d}:{k} at {w}" for (d, k, w), n in c.most_common()) or "  (none)"


@contextlib.contextmanager
def count_transfers():
    t = Transfers()
    try:
        yield t
    finally:
        t._end = len(_LOG)


def reset_transfers():
    _LOG.clear()


# ---------------------------------------------------------------------------------------------------------
# the device array


class Device:
    """``cupy.cuda.Device``: one device, id 0. Usable as a context manager, like CuPy's."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise RuntimeError(f"cupy stand-in: Device({device!r}); only device 0 exists")

    pci_bus_id = "0000:00:00.0 (NumPy stand-in, no GPU)"
    compute_capability = "00"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass

    def use(self):
        pass

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id} (stand-in)>"


_DEVICE0 = Device(0)


def _refuse_numpy(where: str, a):
    raise TypeError(f"{where}: Unsupported type {type(a)} (a numpy.ndarray mixed with device arrays; CuPy refuses "
                    "it: move it to the device with cupy.asarray, or keep the expression on one backend)")


def _scalar_ok(x) -> bool:
    return isinstance(x, (bool, int, float, complex, np.generic))


def _operand(x, where: str):
    """The NumPy value behind one operand of a device expression; NotImplemented for unknown types."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        _refuse_numpy(where, x)
    if _scalar_ok(x):
        return x
    return NotImplemented


def _wrap(r):
    """A NumPy result as what CuPy would return: arrays and scalars become device arrays."""
    if isinstance(r, np.ndarray):
        return ndarray._of(r)
    if isinstance(r, np.generic) or isinstance(r, (bool, int, float, complex)):
        return ndarray._of(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(x) for x in r)
    if isinstance(r, list):
        return [_wrap(x) for x in r]
    return r


def _index(key, where: str):
    """An index for the NumPy array behind a device array. Device index arrays are used as they are; NumPy
    and list indices are accepted (CuPy copies them to the device: counted); a boolean device mask has a
    data-dependent result shape (CuPy synchronises: counted)."""
    parts = key if isinstance(key, tuple) else (key,)
    out = []
    for p in parts:
        if isinstance(p, ndarray):
            if p.dtype == np.bool_:
                _count("d2h", "mask-index", p.shape)
            out.append(p._a)
        elif isinstance(p, (np.ndarray, list)):
            _count("h2d", "index", np.shape(p))
            out.append(np.asarray(p))
        else:
            out.append(p)
    return tuple(out)


def _binop(ufunc, name, reflected=False):
    def op(self, other):
        o = _operand(other, f"cupy.ndarray.{name}")
        if o is NotImplemented:
            return NotImplemented
        with np.errstate(all="ignore"):  # CuPy kernels never warn on overflow or invalid values
            r = ufunc(o, self._a) if reflected else ufunc(self._a, o)
        return _wrap(r)

    op.__name__ = name
    return op


def _inplace(ufunc, name):
    def op(self, other):
        o = _operand(other, f"cupy.ndarray.{name}")
        if o is NotImplemented:
            return NotImplemented
        with np.errstate(all="ignore"):
            ufunc(self._a, o, out=self._a)
        return self

    op.__name__ = name
    return op


def _unary(ufunc, name):
    def op(self):
        with np.errstate(all="ignore"):
            return _wrap(ufunc(self._a))

    op.__name__ = name
    return op


# methods of cupy.ndarray that return arrays (the NumPy method is called on the underlying array)
METHODS = frozenset("""astype reshape transpose swapaxes sum prod mean var std max min argmax argmin any all cumsum
    cumprod copy ravel flatten squeeze take clip dot round conj repeat view diagonal trace sort argsort partition
    argpartition fill""".split())


class ndarray:
    """A device array: a NumPy array that refuses to be used as one (module docstring)."""

    __slots__ = ("_a", "__weakref__")

    def __init__(self, shape, dtype=float, order="C"):
        self._a = np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _of(cls, a: np.ndarray) -> "ndarray":
        obj = cls.__new__(cls)
        obj._a = a
        return obj

    # --- what CuPy refuses
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # A NumPy scalar on the left of an operator (np.float64(2.0) * x) reaches here: CuPy computes it, so do
        # we. Any other route here is a NumPy ufunc called on a device array (np.exp(x)) or a NumPy array
        # mixed into a device expression (host + x).
        if method == "__call__" and not kwargs and len(inputs) == 2 and any(isinstance(i, np.generic) for i in inputs) \
                and all(isinstance(i, ndarray) or _scalar_ok(i) for i in inputs):
            with np.errstate(all="ignore"):
                return _wrap(ufunc(*(i._a if isinstance(i, ndarray) else i for i in inputs)))
        host = [i for i in inputs if isinstance(i, np.ndarray)]
        if host:
            _refuse_numpy(f"numpy.{ufunc.__name__}", host[0])
        raise TypeError(f"numpy.{ufunc.__name__} called on a device array (cupy.ndarray stand-in): use "
                        f"xp.{ufunc.__name__} with xp = get_xp(...), or move the array to the host explicitly "
                        "(backend.to_numpy)")

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} called on a device array (cupy.ndarray stand-in): use "
                        f"xp.{func.__name__} with xp = get_xp(...), or move the array to the host explicitly "
                        "(backend.to_numpy); a NumPy call here is a hidden conversion or a silent dispatch")

    # --- explicit and implicit transfers to the host (counted)
    def get(self, stream=None, order="C", out=None):
        _count("d2h", "get", self.shape)
        a = np.array(self._a, order=order, copy=True)
        if out is not None:
            out[...] = a
            return out
        return a

    def item(self, *args):
        _count("d2h", "item", self.shape)
        return self._a.item(*args)

    def tolist(self):
        _count("d2h", "tolist", self.shape)
        return self._a.tolist()

    def __bool__(self):
        _count("d2h", "bool", self.shape)
        return bool(self._a)

    def __float__(self):
        _count("d2h", "float", self.shape)
        return float(self._a)

    def __int__(self):
        _count("d2h", "int", self.shape)
        return int(self._a)

    def __complex__(self):
        _count("d2h", "complex", self.shape)
        return complex(self._a)

    def __index__(self):
        if self._a.dtype.kind not in "iub" or self._a.ndim:
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        _count("d2h", "index", self.shape)
        return int(self._a)

    def __repr__(self):
        _count("d2h", "repr", self.shape)
        return repr(self._a).replace("array(", "array(device=standin, ", 1)

    __str__ = __repr__

    def __format__(self, spec):
        _count("d2h", "format", self.shape)
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def set(self, arr, stream=None):
        """Copy host data into this array (CuPy's ``ndarray.set``)."""
        if isinstance(arr, ndarray):
            raise TypeError("cupy.ndarray.set: expected a numpy.ndarray")
        _count("h2d", "set", self.shape)
        self._a[...] = np.asarray(arr)

    # --- metadata (no transfer)
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    device = property(lambda self: _DEVICE0)
    T = property(lambda self: ndarray._of(self._a.T))
    real = property(lambda self: ndarray._of(self._a.real))
    imag = property(lambda self: ndarray._of(self._a.imag))

    def __len__(self):
        return len(self._a)

    def __iter__(self):  # CuPy yields device rows
        for i in range(len(self._a)):
            yield self[i]

    __hash__ = None

    def __copy__(self):
        return ndarray._of(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray._of(self._a.copy())

    def __reduce__(self):
        raise TypeError("cupy stand-in: pickling a device array would copy it to the host; call .get() first")

    def __getattr__(self, name):
        if name in METHODS:
            meth = getattr(self._a, name)

            def call(*args, **kwargs):
                a, k = _unwrap_all(args, kwargs, f"cupy.ndarray.{name}")
                with np.errstate(all="ignore"):
                    r = meth(*a, **k)
                return None if r is None else _wrap(r)

            call.__name__ = name
            return call
        if name == "nonzero":
            def nz():
                _count("d2h", "nonzero", self.shape)
                return _wrap(self._a.nonzero())
            return nz
        raise AttributeError(f"'cupy.ndarray' (stand-in) has no attribute {name!r}; add it to METHODS in "
                             "tests/device_standin.py if CuPy's ndarray has it")

    # --- indexing
    def __getitem__(self, key):
        k = _index(key, "cupy.ndarray.__getitem__")
        r = self._a[k]
        if isinstance(r, np.generic):  # CuPy returns a 0-d device view, not a scalar
            r = self._a[k + (Ellipsis,)]
        return ndarray._of(r)

    def __setitem__(self, key, value):
        k = _index(key, "cupy.ndarray.__setitem__")
        if isinstance(value, ndarray):
            value = value._a
        elif isinstance(value, np.ndarray):
            _count("h2d", "setitem", value.shape)  # CuPy copies a host value to the device
        elif not _scalar_ok(value):
            raise TypeError(f"cupy.ndarray.__setitem__: Unsupported type {type(value)}")
        self._a[k] = value

    # --- arithmetic: device arrays, Python and NumPy scalars; a NumPy array is refused
    __add__, __radd__ = _binop(np.add, "__add__"), _binop(np.add, "__radd__", True)
    __sub__, __rsub__ = _binop(np.subtract, "__sub__"), _binop(np.subtract, "__rsub__", True)
    __mul__, __rmul__ = _binop(np.multiply, "__mul__"), _binop(np.multiply, "__rmul__", True)
    __truediv__, __rtruediv__ = _binop(np.true_divide, "__truediv__"), _binop(np.true_divide, "__rtruediv__", True)
    __floordiv__ = _binop(np.floor_divide, "__floordiv__")
    __rfloordiv__ = _binop(np.floor_divide, "__rfloordiv__", True)
    __mod__, __rmod__ = _binop(np.remainder, "__mod__"), _binop(np.remainder, "__rmod__", True)
    __pow__, __rpow__ = _binop(np.power, "__pow__"), _binop(np.power, "__rpow__", True)
    __matmul__, __rmatmul__ = _binop(np.matmul, "__matmul__"), _binop(np.matmul, "__rmatmul__", True)
    __and__, __rand__ = _binop(np.bitwise_and, "__and__"), _binop(np.bitwise_and, "__rand__", True)
    __or__, __ror__ = _binop(np.bitwise_or, "__or__"), _binop(np.bitwise_or, "__ror__", True)
    __xor__, __rxor__ = _binop(np.bitwise_xor, "__xor__"), _binop(np.bitwise_xor, "__rxor__", True)
    __lt__, __le__ = _binop(np.less, "__lt__"), _binop(np.less_equal, "__le__")
    __gt__, __ge__ = _binop(np.greater, "__gt__"), _binop(np.greater_equal, "__ge__")
    __eq__, __ne__ = _binop(np.equal, "__eq__"), _binop(np.not_equal, "__ne__")
    __iadd__, __isub__ = _inplace(np.add, "__iadd__"), _inplace(np.subtract, "__isub__")
    __imul__, __itruediv__ = _inplace(np.multiply, "__imul__"), _inplace(np.true_divide, "__itruediv__")
    __ifloordiv__, __ipow__ = _inplace(np.floor_divide, "__ifloordiv__"), _inplace(np.power, "__ipow__")
    __iand__, __ior__ = _inplace(np.bitwise_and, "__iand__"), _inplace(np.bitwise_or, "__ior__")
    __ixor__ = _inplace(np.bitwise_xor, "__ixor__")
    __neg__, __pos__ = _unary(np.negative, "__neg__"), _unary(np.positive, "__pos__")
    __abs__, __invert__ = _unary(np.absolute, "__abs__"), _unary(np.invert, "__invert__")


# ---------------------------------------------------------------------------------------------------------
# cupy.<function>


def _unwrap(x, where: str):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        _refuse_numpy(where, x)
    if isinstance(x, list):
        return [_unwrap(v, where) for v in x]
    if isinstance(x, tuple):
        vals = [_unwrap(v, where) for v in x]
        return type(x)(*vals) if hasattr(x, "_fields") else tuple(vals)
    if hasattr(x, "_value") and type(x).__module__.startswith("autograd"):
        raise TypeError(f"{where}: an autograd box; CuPy cannot be traced by autograd")
    return x


def _unwrap_all(args, kwargs, where):
    return [_unwrap(a, where) for a in args], {k: _unwrap(v, where) for k, v in kwargs.items()}


# The NumPy functions CuPy also has, that this stand-in serves (add a name when the package needs one CuPy has).
UFUNCS = frozenset("""add subtract multiply divide true_divide floor_divide negative positive power exp expm1 exp2 log
    log1p log2 log10 sqrt square absolute abs fabs sign tanh sinh cosh sin cos tan arctan arcsin arccos arctanh
    maximum minimum fmax fmin logaddexp logaddexp2 isfinite isnan isinf greater greater_equal less less_equal equal
    not_equal logical_and logical_or logical_not logical_xor bitwise_and bitwise_or bitwise_xor invert reciprocal
    floor ceil rint trunc remainder mod fmod arctan2 hypot signbit copysign nextafter""".split())
FUNCTIONS = UFUNCS | frozenset("""sum prod mean var std max min amax amin argmax argmin any all cumsum cumprod where
    matmul dot vdot einsum tensordot outer inner kron reshape ravel transpose swapaxes moveaxis squeeze expand_dims
    broadcast_to broadcast_arrays atleast_1d atleast_2d concatenate stack vstack hstack split array_split take
    take_along_axis partition argpartition sort argsort count_nonzero tril triu diag diagonal trace eye identity
    zeros ones empty full zeros_like ones_like empty_like full_like arange linspace copy array_equal allclose
    isclose round around clip flip roll tile repeat diff searchsorted isin cumsum nan_to_num median percentile
    average bincount histogram""".split())
SYNCING = frozenset("flatnonzero nonzero argwhere unique".split())  # output shape depends on the data
METADATA = frozenset("result_type ndim shape size".split())  # answered from shapes and dtypes: no device work
_cache: dict = {}


def _function(name: str):
    f = getattr(np, name)
    where = f"cupy.{name}"

    def call(*args, **kwargs):
        out = kwargs.get("out")
        if out is not None and not isinstance(out, (ndarray, tuple)):
            raise TypeError(f"{where}: out= must be a cupy.ndarray, not {type(out)}")
        a, k = _unwrap_all(args, kwargs, where)
        if name in SYNCING:
            _count("d2h", name, np.shape(a[0]) if a else ())
        with np.errstate(all="ignore"):
            r = f(*a, **k)
        if out is not None:
            return out
        return _wrap(r)

    call.__name__ = call.__qualname__ = name
    return call


def _metadata(name: str):
    f = getattr(np, name)

    def call(*args, **kwargs):
        # shapes and dtypes of device arrays; never their values
        return f(*(x.dtype if isinstance(x, ndarray) and name == "result_type" else
                   (np.empty(x.shape, x.dtype) if isinstance(x, ndarray) else x) for x in args), **kwargs)

    call.__name__ = name
    return call


def __getattr__(name):  # PEP 562: cupy.<function>, built on first use
    if name in _cache:
        return _cache[name]
    if name in FUNCTIONS or name in SYNCING:
        fn = _function(name)
    elif name in METADATA:
        fn = _metadata(name)
    else:
        raise AttributeError(f"module 'cupy' (the NumPy stand-in, tests/device_standin.py) has no attribute {name!r}; "
                             "if CuPy has it, add it to FUNCTIONS there")
    _cache[name] = fn
    return fn


def asarray(a, dtype=None, order=None, *, blocking=False):
    """A device array of ``a``: the array itself when it already is one (a cast if ``dtype`` differs), else a
    host->device copy (counted)."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else ndarray._of(a._a.astype(dtype))
    if hasattr(a, "_value") and type(a).__module__.startswith("autograd"):
        raise TypeError("cupy.asarray: an autograd box; CuPy cannot be traced by autograd")
    _count("h2d", "asarray", np.shape(a))
    return ndarray._of(np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(obj, ndarray):
        r = obj._a.astype(dtype) if dtype is not None else obj._a
        return ndarray._of(np.array(r, copy=True, order=order, ndmin=ndmin) if copy else r)
    _count("h2d", "array", np.shape(obj))
    return ndarray._of(np.array(obj, dtype=dtype, order=order, ndmin=ndmin, copy=True))


ascontiguousarray = asarray


def asnumpy(a, stream=None, order="C", out=None):
    """``cupy.asnumpy``: a device array copied to the host (counted); host data passes through."""
    if isinstance(a, ndarray):
        _count("d2h", "asnumpy", a.shape)
        r = np.array(a._a, order=order, copy=True)
    else:
        r = np.asarray(a, order=order)
    if out is not None:
        out[...] = r
        return out
    return r


def get_array_module(*args):
    return sys.modules[__name__] if builtins.any(isinstance(a, ndarray) for a in args) else np


# ---------------------------------------------------------------------------------------------------------
# cupy.random: device-side generators (no transfer)


class _RandomState:
    def __init__(self, seed=None):
        self._g = np.random.default_rng(seed)

    def standard_normal(self, size=None, dtype=float):
        return ndarray._of(np.asarray(self._g.standard_normal(size)).astype(dtype))

    def random_sample(self, size=None, dtype=float):
        return ndarray._of(np.asarray(self._g.random(size)).astype(dtype))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=float):
        return ndarray._of(np.asarray(self._g.uniform(low, high, size)).astype(dtype))

    def randint(self, low, high=None, size=None, dtype=int):
        return ndarray._of(np.asarray(self._g.integers(low, high, size)).astype(dtype))


_rs = _RandomState(0)
random = types.SimpleNamespace(
    standard_normal=lambda size=None, dtype=float: _rs.standard_normal(size, dtype),
    random=lambda size=None, dtype=float: _rs.random_sample(size, dtype),
    uniform=lambda low=0.0, high=1.0, size=None, dtype=float: _rs.uniform(low, high, size, dtype),
    randint=lambda low, high=None, size=None, dtype=int: _rs.randint(low, high, size, dtype),
    seed=lambda seed=None: _rs.__init__(seed),
    RandomState=_RandomState,
)


# ---------------------------------------------------------------------------------------------------------
# cupy.cuda and cupyx.profiler: enough for backend, timing.gpu_time, bench/sec_cupy.py and notebook 11


class _Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    done = True


class _Stream:
    def __init__(self, null=False, non_blocking=False, ptds=False):
        pass

    def synchronize(self):
        pass

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _elapsed_ms(start: _Event, end: _Event) -> float:
    return 1e3 * (end.t - start.t)


_PROPS = {"name": b"NumPy stand-in (no GPU)", "totalGlobalMem": 0, "multiProcessorCount": 0, "major": 0, "minor": 0,
          "clockRate": 0}

cuda = types.SimpleNamespace(
    Device=Device,
    Event=_Event,
    Stream=_Stream,
    get_elapsed_time=_elapsed_ms,
    get_current_stream=lambda device=None: _Stream(),
    runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        getDeviceProperties=lambda device: dict(_PROPS),
        runtimeGetVersion=lambda: 0,
        driverGetVersion=lambda: 0,
        deviceSynchronize=lambda: None,
        getDevice=lambda: 0,
    ),
)
cuda.Stream.null = _Stream(null=True)


class _BenchmarkResult:
    """``cupyx.profiler.benchmark``'s result: ``gpu_times`` (devices, repeats) and ``cpu_times`` (repeats,), in
    seconds. Here both are host clock readings of NumPy code: meaningless as GPU times."""

    def __init__(self, name, cpu_times, gpu_times):
        self.name, self.cpu_times, self.gpu_times = name, cpu_times, gpu_times

    def __repr__(self):
        cpu, gpu = np.median(self.cpu_times) * 1e6, np.median(self.gpu_times) * 1e6
        return f"{self.name}: CPU {cpu:.1f} us, 'GPU' {gpu:.1f} us (NumPy stand-in: no GPU was timed)"


def _benchmark(func, args=(), kwargs=None, *, n_repeat=10000, name=None, n_warmup=10, max_duration=np.inf,
               devices=None):
    kwargs = kwargs or {}
    for _ in range(n_warmup):
        func(*args, **kwargs)
    cpu = []
    for _ in range(n_repeat):
        t0 = time.perf_counter()
        func(*args, **kwargs)
        cpu.append(time.perf_counter() - t0)
    cpu = np.asarray(cpu)
    return _BenchmarkResult(name or getattr(func, "__name__", "func"), cpu, cpu[None, :].copy())


cupyx = types.ModuleType("cupyx")
cupyx.__doc__ = "The NumPy stand-in's cupyx: profiler.benchmark only (tests/device_standin.py)."
cupyx.profiler = types.ModuleType("cupyx.profiler")
cupyx.profiler.benchmark = _benchmark
cupyx.IS_STANDIN = True

_NAMES = ("cupy", "cupyx", "cupyx.profiler")


def install() -> dict:
    """Put this module in sys.modules as ``cupy`` (with ``cupyx`` and ``cupyx.profiler``); returns what was there,
    for ``uninstall``."""
    saved = {n: sys.modules.get(n) for n in _NAMES}
    sys.modules["cupy"] = sys.modules[__name__]
    sys.modules["cupyx"] = cupyx
    sys.modules["cupyx.profiler"] = cupyx.profiler
    return saved


def uninstall(saved: dict) -> None:
    """Undo ``install``: the modules that were there come back, and names that were not are removed."""
    for n, mod in saved.items():
        if mod is None:
            sys.modules.pop(n, None)
        else:
            sys.modules[n] = mod
