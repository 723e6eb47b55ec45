"""Reading data from files nobody vouched for: pickle opcode scans, inert stand-ins, bounded traversal.

* `pickle_globals` lists every class/function a pickle would look up, from its opcodes alone
  (``pickletools.genops``: GLOBAL and INST name it inline, STACK_GLOBAL takes the two strings pushed before it;
  OBJ, NEWOBJ and REDUCE then call what those pushed). Nothing is unpickled, imported or run; the scan stops
  after `MAX_PICKLE_OPS` instructions, so a crafted file costs milliseconds.
* `inert_class` makes a stand-in for a global that is not needed: calling, constructing, filling or
  "setting the state" of one stores nothing and runs nothing.
* `check_bounded` walks unpickled or YAML data without recursion and refuses it when it is deeper than
  `MAX_DEPTH`, refers to itself, or has more than `MAX_NODES` nodes counting every shared reference as often
  as it is reached (what a later conversion would expand: list/memo and alias bombs stop here).
"""
from __future__ import annotations

import pickletools
import reprlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

MAX_PICKLE_OPS = 500_000     # a real HaMeR checkpoint's data.pkl has ~17 000
MAX_DEPTH = 64               # nesting of containers
MAX_NODES = 100_000          # containers and values, shared references counted at every use

# Modules whose globals can only mean running code or touching the system: refused wherever they appear
# (builtins' plain data types excepted: DATA_BUILTINS; numpy.testing too, whose helpers run strings).
CODE_MODULES = frozenset({
    'os', 'posix', 'nt', 'subprocess', '_posixsubprocess', 'sys', 'builtins', '__builtin__', 'importlib', 'runpy',
    'shutil', 'socket', 'pickle', '_pickle', 'marshal', 'ctypes', 'code', 'codeop', 'pty', 'webbrowser',
    'multiprocessing', 'pdb', 'timeit', 'profile', 'cProfile', 'operator', 'functools', 'types', 'inspect',
    'commands', 'platform', 'signal', 'threading', '_thread', 'io', '_io', 'tempfile', 'glob', 'asyncio',
})

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlevel, _short.maxdict, _short.maxlist, _short.maxtuple = 2, 4, 4, 4


def short_repr(value) -> str:
    """A bounded repr for messages (never the whole of a crafted value)."""
    return _short.repr(value)


def printable(text: str, limit: int = 160) -> str:
    """`text` from a file, safe to print: control characters (terminal escapes) escaped, at most `limit` chars."""
    safe = ''.join(c if c.isprintable() else c.encode('unicode_escape').decode('ascii') for c in text[:limit])
    return safe + ('...' if len(text) > limit else '')


class UntrustedDataError(ValueError):
    """Data that is too large, too deep or self-referential to be read safely (the message says which)."""


@dataclass(frozen=True)
class PickleGlobal:
    name: str       # 'module.qualname'
    opcode: str     # GLOBAL, STACK_GLOBAL or INST

    @property
    def module(self) -> str:
        return self.name.split('.', 1)[0]


_STRING_OPS = {'SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE', 'STRING', 'BINSTRING',
               'SHORT_BINSTRING'}
_PUT_OPS = {'PUT', 'BINPUT', 'LONG_BINPUT'}
_GET_OPS = {'GET', 'BINGET', 'LONG_BINGET'}


def pickle_globals(data: bytes) -> List[PickleGlobal]:
    """Every global the pickle `data` names, in order of appearance (duplicates removed).

    Raises UntrustedDataError for more than `MAX_PICKLE_OPS` instructions, ValueError for bytes that are no
    valid pickle. A STACK_GLOBAL whose strings cannot be followed statically is reported as '<computed>'."""
    found, seen = [], set()
    memo, recent = {}, []          # memo index -> string; the last strings pushed (STACK_GLOBAL's operands)
    memo_count = 0

    def add(name: str, opcode: str):
        name = printable(name, limit=120)
        if (name, opcode) not in seen:
            seen.add((name, opcode))
            found.append(PickleGlobal(name, opcode))

    for count, (op, arg, _) in enumerate(pickletools.genops(data)):
        if count >= MAX_PICKLE_OPS:
            raise UntrustedDataError(f'more than {MAX_PICKLE_OPS} pickle instructions')
        name = op.name
        if name in ('GLOBAL', 'INST'):
            module, _, qualname = str(arg).partition(' ')
            add(f'{module}.{qualname}', name)
            recent.clear()
        elif name in _STRING_OPS:
            recent.append(arg if isinstance(arg, str) else bytes(arg).decode('latin1'))
            del recent[:-2]
        elif name in _GET_OPS:
            recent.append(memo.get(arg))
            del recent[:-2]
        elif name in _PUT_OPS or name == 'MEMOIZE':
            index = arg if name in _PUT_OPS else memo_count
            memo[index] = recent[-1] if recent else None
            memo_count += 1
        elif name == 'STACK_GLOBAL':
            module, qualname = recent[-2:] if len(recent) == 2 else (None, None)
            add(f'{module}.{qualname}' if isinstance(module, str) and isinstance(qualname, str) else '<computed>',
                name)
            recent.clear()
        elif name not in ('FRAME', 'PROTO'):
            recent.clear()
    return found


# Built-in types pickles use for plain data (a set inside a yacs CfgNode; object and dict in protocol 0/1
# reconstructions): building one runs no code of the file.
DATA_BUILTINS = {f'{module}.{value.__name__}': value for module in ('builtins', '__builtin__')
                 for value in (set, frozenset, complex, object, dict, list, tuple, str, int, float, bool, bytes,
                               bytearray, slice, range)}


def runs_code(item: PickleGlobal) -> bool:
    """A global from a module that runs code or touches the system (or one the scan could not name)."""
    if item.name in DATA_BUILTINS:
        return False
    return item.module in CODE_MODULES or item.name == '<computed>' or item.name.startswith('numpy.testing')


class Inert:
    """Base of the stand-ins: accepts every way a pickle builds an object and keeps none of it."""
    global_name = ''

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass

    def __repr__(self):
        return f'<ignored {self.global_name}>'


def inert_class(global_name: str) -> type:
    """A fresh stand-in class for `global_name` (nothing of it is imported)."""
    return type('Ignored', (Inert,), {'global_name': global_name, '__slots__': ()})


_EXIT = object()
_SEQUENCES = (list, tuple, set, frozenset)
# Exact types answered without the (slow) abstract-class checks: most nodes are one of these.
_FAST_KIND = {dict: 'mapping', OrderedDict: 'mapping', list: 'sequence', tuple: 'sequence', set: 'sequence',
              frozenset: 'sequence', str: None, bytes: None, int: None, float: None, bool: None, type(None): None}


def _kind(node) -> Optional[str]:
    kind = _FAST_KIND.get(type(node), _EXIT)
    if kind is not _EXIT:
        return kind
    if isinstance(node, Mapping):
        return 'mapping'
    return 'sequence' if isinstance(node, _SEQUENCES) else None


def _children(value, kind: str) -> Iterator[Tuple[object, object]]:
    """(step, child) pairs: a mapping's keys and values (both at step key), a sequence's items (step index)."""
    if kind == 'mapping':
        for key, item in value.items():
            yield key, key
            yield key, item
    else:
        yield from enumerate(value)


def check_bounded(value, where: str, collect: Optional[type] = None,
                  max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> List[Tuple[str, object]]:
    """Walks `value` depth-first without recursion (dicts, lists, tuples, sets) and returns (path, node) for
    every node that is an instance of `collect` (path like "['state_dict']['x'][0]"; '' for the top).
    Raises UntrustedDataError (naming `where` and the path) when the data is deeper than `max_depth`, contains
    itself, or has more than `max_nodes` nodes, counting shared references at each use."""
    nodes, found = 1, []
    trail: List[object] = []          # steps from the top to the container being walked
    on_path = set()                   # ids of those containers
    stack: List[Tuple[object, object, int]] = [(value, _EXIT, 0)]   # (node, its step, depth); the top has none

    def path(last) -> str:
        steps = trail[1:] + ([last] if last is not _EXIT else [])
        return ''.join(f'[{short_repr(step)}]' for step in steps)

    while stack:
        node, step, depth = stack.pop()
        if node is _EXIT:
            on_path.discard(step)
            trail.pop()
            continue
        if collect is not None and isinstance(node, collect):
            found.append((path(step), node))
        kind = _kind(node)
        if kind is None:
            continue
        if id(node) in on_path:
            where_inside = path(step)[:120] or 'the top'
            raise UntrustedDataError(f'{where}: the data at {where_inside} contains itself: refused as a crafted file')
        if depth >= max_depth:
            raise UntrustedDataError(f'{where}: nested deeper than {max_depth} levels at {path(step)[:120]}...: '
                                     'refused as a crafted file')
        nodes += len(node) * (2 if kind == 'mapping' else 1)
        if nodes > max_nodes:
            raise UntrustedDataError(f'{where}: more than {max_nodes} values (counting shared references at each '
                                     'use): refused as a crafted file')
        on_path.add(id(node))
        trail.append(step)
        stack.append((_EXIT, id(node), depth))
        stack.extend((child, child_step, depth + 1) for child_step, child in _children(node, kind))
    return found
