"""Compact JSON out and in through CPython's C accelerator (_json), without importing the json
package: its decoder and encoder import re, ~13 ms of every agent start, which a sync no-op (one
agent call) feels. The output is json.dumps(obj, separators=(",", ":")) exactly (ASCII, as its
default); loads is json.loads (strict, NaN/Infinity accepted), raising ValueError. Where _json is
missing or takes other arguments (another interpreter), both use the json package itself."""

_WS = " \t\n\r"
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _ScanContext(object):
    """The attributes _json.make_scanner reads off json.JSONDecoder, with json.loads's defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_CONSTANTS.__getitem__)


def _unserializable(o):
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


def _make_encoder():
    # The arguments json.JSONEncoder.iterencode passes (markers, default, encoder, indent,
    # key_separator, item_separator, sort_keys, skipkeys, allow_nan); a new one a call, as json does,
    # so the circular-reference markers of a failed call never linger.
    return _c.make_encoder({}, _unserializable, _c.encode_basestring_ascii, None, ":", ",", False, False, True)


try:
    import _json as _c

    _scan = _c.make_scanner(_ScanContext())
    if "".join(_make_encoder()({"a": [1, 2.5, "\u00e9\n", None, True]}, 0)) != '{"a":[1,2.5,"\\u00e9\\n",null,true]}':
        raise ImportError("_json encodes differently")
    _probe = '{"a":[1,2.5,"\\u00e9",null]}'
    if _scan(_probe, 0) != ({"a": [1, 2.5, "\u00e9", None]}, len(_probe)):
        raise ImportError("_json decodes differently")
except Exception:  # no accelerator, or one with another signature: the json package
    _scan = None


def dumps(obj):
    """json.dumps(obj, separators=(",", ":"))."""
    if _scan is None:
        import json

        return json.dumps(obj, separators=(",", ":"))
    return "".join(_make_encoder()(obj, 0))


def loads(text):
    """json.loads(text) for a str; ValueError when it is not one JSON value."""
    if _scan is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WS))
    try:
        obj, end = _scan(text, start)
    except StopIteration as e:
        raise ValueError("Expecting value: char %s" % e.value)
    if text[end:].strip(_WS):
        raise ValueError("Extra data: char %d" % end)
    return obj
