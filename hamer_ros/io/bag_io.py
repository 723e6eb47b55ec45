"""rosbag2 bags (sqlite3 and MCAP) without ROS: reading camera images, writing hand outputs.

Built on the `rosbags` library (pure Python), so the offline tools work from a plain pip install. Message
types: rosbags' own store of the ROS 2 Kilted standard messages, plus `hamer_ros/HandMesh`, `HandMeshArray`,
`HandBox` and `HandBoxArray` registered from this package's `.msg` files (found by `message_definition_dir`;
never a copy).

Messages are filled by the same builders the node uses (`ros_messages.hand_mesh_array`, `markers`,
`tf_frames`). Those build whatever classes `hamer_ros.io.message_classes` provides: the ROS-generated ones
where ROS is installed, else `stand_in` classes made here from the same definitions. `serialize` takes
either kind: a ROS message is first copied field by field into its stand-in (`to_stand_in`), because
serialising it with rclpy would tie the offline tools to rclpy (STYLE: the core imports no rclpy) and
rosbags' CDR serialiser needs numpy arrays where rclpy keeps `array.array`.

Output bags are crash-safe (`BagWriter`): written under a temporary name, closed in `finally` (so the MCAP
summary and metadata.yaml are always written, also after an error), then moved to their final name.
"""
from __future__ import annotations

import array
import functools
import os
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from hamer_ros.errors import InputError, MissingFileError

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
OUR_MESSAGES = ('HandMesh', 'HandMeshArray', 'HandBox', 'HandBoxArray')

# numpy dtype of each ROS primitive that can sit in an array field (rosbags holds those as numpy arrays).
_NUMPY_DTYPES = {'bool': np.bool_, 'byte': np.uint8, 'char': np.uint8, 'octet': np.uint8,
                 'int8': np.int8, 'uint8': np.uint8, 'int16': np.int16, 'uint16': np.uint16,
                 'int32': np.int32, 'uint32': np.uint32, 'int64': np.int64, 'uint64': np.uint64,
                 'float32': np.float32, 'float64': np.float64}


# ------------------------------------------------------------------------------------------- type store

def message_definition_dir() -> Path:
    """The folder holding this package's message definitions (HandMesh.msg, ... : OUR_MESSAGES).

    Looked up where each kind of install puts them: next to the package in a source checkout (`msg/`), the
    ament share folder of a colcon/ROS install (`share/hamer_ros/msg`), and the same path under the prefix of
    a pip install (setup.cfg installs them there as data files): the prefix holding the package
    (<prefix>/lib/pythonX.Y/site-packages/hamer_ros), or Python's own.
    """
    import hamer_ros

    packages = [Path(entry) for entry in hamer_ros.__path__]
    candidates = [package.parent / 'msg' for package in packages]
    candidates += [package.parents[3] / 'share' / 'hamer_ros' / 'msg' for package in packages
                   if len(package.parents) > 3 and package.parent.name in ('site-packages', 'dist-packages')]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            candidates.append(Path(get_package_share_directory('hamer_ros')) / 'msg')
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    candidates += [Path(prefix) / 'share' / 'hamer_ros' / 'msg' for prefix in (sys.prefix, sys.base_prefix)]
    for folder in candidates:
        if all((folder / f'{name}.msg').is_file() for name in OUR_MESSAGES):
            return folder
    raise MissingFileError(
        f'cannot find the hamer_ros message definitions ({", ".join(n + ".msg" for n in OUR_MESSAGES)}); '
        'looked in '
        + ', '.join(str(c) for c in candidates) + '. Reinstall hamer_ros (pip install . or colcon build)')


@functools.lru_cache(maxsize=None)
def typestore():
    """rosbags type store: ROS 2 Kilted's standard messages + this package's (OUR_MESSAGES)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    folder = message_definition_dir()
    types = {}
    for name in OUR_MESSAGES:
        types.update(get_types_from_msg((folder / f'{name}.msg').read_text(), f'hamer_ros/msg/{name}'))
    store.register(types)
    return store


def _fields(typename: str):
    try:
        return typestore().fielddefs[typename][1]
    except KeyError:
        raise ValueError(f'unknown message type {typename!r} (not a ROS 2 Kilted standard message nor ours)') \
            from None


# ------------------------------------------------------------------------------------------ stand-ins

def _as_array(value, dtype) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value.astype(dtype, copy=False)
    if isinstance(value, array.array):       # how rclpy holds number arrays (and ros_messages fills them)
        return np.frombuffer(value, dtype=value.typecode).astype(dtype, copy=False)
    if isinstance(value, (bytes, bytearray, memoryview)):     # byte fields (e.g. Image.data)
        return np.frombuffer(value, dtype=np.uint8).astype(dtype, copy=False)
    return np.asarray(value, dtype=dtype)


def _primitive_array_dtype(desc):
    """numpy dtype when the field is an array/sequence of numbers, else None."""
    from rosbags.typesys.base import Nodetype

    if desc[0] in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        item = desc[1][0]
        if item[0] == Nodetype.BASE and item[1][0] != 'string':
            return _NUMPY_DTYPES[item[1][0]]
    return None


def _default(desc):
    from rosbags.typesys.base import Nodetype

    kind = desc[0]
    if kind == Nodetype.BASE:
        name = desc[1][0]
        return '' if name == 'string' else False if name == 'bool' else 0.0 if name.startswith('float') else 0
    if kind == Nodetype.NAME:
        return stand_in(desc[1])()
    item, length = desc[1]
    dtype = _primitive_array_dtype(desc)
    if kind == Nodetype.SEQUENCE:
        return np.zeros(0, dtype) if dtype is not None else []
    if dtype is not None:
        return np.zeros(length, dtype)
    return [_default(item) for _ in range(length)]


@functools.lru_cache(maxsize=None)
def stand_in(typename: str) -> type:
    """A class for `typename` ('pkg/msg/Name') that behaves like the ROS-generated one where the builders
    need it: keyword constructor with every field optional (defaults as in ROS), constants as class
    attributes, number arrays stored as numpy arrays whatever is assigned. It is rosbags' dataclass for the
    type (a subclass), so rosbags serialises it directly."""
    base = typestore().types[typename]
    fields = _fields(typename)
    names = [name for name, _ in fields]
    array_dtypes = {name: dtype for name, desc in fields if (dtype := _primitive_array_dtype(desc)) is not None}

    def __init__(self, **values):
        unknown = set(values) - set(names)
        if unknown:
            raise TypeError(f'{typename} has no field(s) {sorted(unknown)}')
        base.__init__(self, **{name: values[name] if name in values else _default(desc) for name, desc in fields})

    def __setattr__(self, name, value):
        dtype = array_dtypes.get(name)
        object.__setattr__(self, name, value if dtype is None else _as_array(value, dtype))

    return type(base.__name__, (base,), {'__init__': __init__, '__setattr__': __setattr__,
                                         '__doc__': f'{typename} (rosbags stand-in with ROS-like defaults)'})


def ros_type_name(message) -> str:
    """'pkg/msg/Name' of a ROS-generated message object or a rosbags dataclass."""
    cls = type(message)
    msgtype = getattr(cls, '__msgtype__', None)
    if msgtype:
        return msgtype
    package = cls.__module__.split('.')[0]
    return f'{package}/msg/{cls.__name__}'


def to_stand_in(message):
    """The same message as a rosbags object (`stand_in` class); rosbags objects are returned unchanged."""
    if hasattr(type(message), '__msgtype__'):
        return message
    from rosbags.typesys.base import Nodetype

    typename = ros_type_name(message)
    values = {}
    for name, desc in _fields(typename):
        value = getattr(message, name)
        if desc[0] == Nodetype.NAME:
            value = to_stand_in(value)
        elif desc[0] in (Nodetype.ARRAY, Nodetype.SEQUENCE) and desc[1][0][0] == Nodetype.NAME:
            value = [to_stand_in(item) for item in value]
        values[name] = value
    return stand_in(typename)(**values)


def serialize(message) -> bytes:
    """CDR bytes (little endian, as ROS 2 writes them) of a ROS-generated or rosbags message."""
    converted = to_stand_in(message)
    return bytes(typestore().serialize_cdr(converted, ros_type_name(converted)))


def deserialize(raw: bytes, typename: str):
    """A rosbags dataclass from CDR bytes (number arrays come back as numpy arrays)."""
    return typestore().deserialize_cdr(raw, typename)


def header(stamp_ns: int, frame_id: str):
    """A std_msgs/Header of the classes the builders use (`hamer_ros.io.message_classes`)."""
    from hamer_ros.io.message_classes import Header, Time

    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# ---------------------------------------------------------------------------------------------- reading

@dataclass
class BagMessage:
    topic: str
    msgtype: str
    log_time_ns: int          # when the recorder received it
    message: object           # rosbags dataclass, or None when it could not be decoded
    error: Optional[str] = None


class BagReader:
    """One rosbag2 bag (a bag folder, or a single .mcap/.db3 file), read in log-time order.

    An MCAP bag that rosbags cannot open because its file ends early (a recorder killed mid-write: no summary,
    no footer) is read by `TruncatedMcap` instead: every message in the readable part comes out, `damage` says
    what was lost, and `unreadable(topic)` counts the messages that metadata.yaml announces beyond it."""

    def __init__(self, path):
        from rosbags.rosbag2 import Reader
        from rosbags.rosbag2.errors import ReaderError

        self.path = Path(path)
        self.damage: Optional[str] = None
        self._salvaged: Optional[TruncatedMcap] = None
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except FileNotFoundError:
            raise MissingFileError(f'bag {self.path} does not exist') from None
        except ReaderError as exc:
            self._salvaged = TruncatedMcap.open_or_none(self.path)
            if self._salvaged is None:
                raise InputError(f'cannot open {self.path} as a rosbag2 bag (sqlite3 or MCAP): {exc}') from None
            self.damage = f'{self._salvaged.damage} (rosbags: {exc})'

    @property
    def topics(self) -> Dict[str, Tuple[str, int]]:
        """topic -> (message type, message count)."""
        if self._salvaged is not None:
            return self._salvaged.topics
        return {topic: (info.msgtype, info.msgcount) for topic, info in self._reader.topics.items()}

    def image_topic(self, topic: Optional[str]) -> str:
        """`topic` checked to be an image topic, or the bag's only image topic when None."""
        images = {name: msgtype for name, (msgtype, _) in self.topics.items() if msgtype in IMAGE_TYPES}
        listing = ', '.join(f'{name} ({msgtype.split("/")[-1]})' for name, msgtype in sorted(images.items())) \
            or 'none'
        if topic is None:
            if len(images) == 1:
                return next(iter(images))
            raise InputError(f'{self.path} has {len(images)} image topics ({listing}): choose one with --topic')
        if topic not in images:
            what = f'is a {self.topics[topic][0]} topic' if topic in self.topics else 'is not in the bag'
            raise InputError(f'topic {topic} {what}; the image topics of {self.path} are: {listing}')
        return topic

    def count(self, topic: str) -> int:
        return self.topics[topic][1]

    def unreadable(self, topic: str) -> int:
        """Messages of `topic` the bag announces but that lie beyond the readable part (0 for an intact bag)."""
        return self._salvaged.unreadable(topic) if self._salvaged is not None else 0

    def _raw(self, topics: Sequence[str]) -> Iterator[Tuple[str, str, int, bytes]]:
        """(topic, message type, log time, CDR bytes) of `topics`, in log-time order."""
        if self._salvaged is not None:
            yield from self._salvaged.messages(topics)
            return
        connections = [c for c in self._reader.connections if c.topic in topics]
        for connection, log_time, raw in self._reader.messages(connections=connections):
            yield connection.topic, connection.msgtype, int(log_time), raw

    def messages(self, topics: Sequence[str]) -> Iterator[BagMessage]:
        """Messages of `topics` in log-time order; an undecodable message comes with its error instead."""
        for topic, msgtype, log_time, raw in self._raw(topics):
            try:
                message, error = deserialize(raw, msgtype), None
            except Exception as exc:    # noqa: BLE001 - one corrupt message must not end the bag
                message, error = None, f'cannot decode the {msgtype} message: {exc}'
            yield BagMessage(topic, msgtype, log_time, message, error)

    def log_times(self, topic: str, limit: int) -> List[int]:
        """Log times of the first `limit` messages of `topic`, read without decoding the messages."""
        return [log_time for _, (_, _, log_time, _) in zip(range(limit), self._raw([topic]))]

    def close(self) -> None:
        if self._salvaged is None:
            self._reader.close()


class TruncatedMcap:
    """The readable part of an MCAP bag whose file(s) end early, read record by record from the start.

    MCAP layout relied on (the MCAP specification, foxglove/mcap docs/specification/README.md): an 8-byte magic,
    then records of opcode (uint8), length (uint64, little endian) and content; Schema (0x03: id uint16, name,
    encoding, data), Channel (0x04: id uint16, schema id uint16, topic, message encoding, metadata), Message
    (0x05: channel id uint16, sequence uint32, log time uint64, publish time uint64, data) and Chunk (0x06:
    start/end time uint64, uncompressed size uint64, crc uint32, compression string, then the inner records as
    a uint64-sized byte array). Strings and byte arrays carry a uint32 length. A whole chunk is decompressed as
    rosbags does; the cut chunk is read as far as it goes when uncompressed (a compressed cut chunk is lost)."""

    MAGIC = b'\x89MCAP0\r\n'
    MAX_RECORD = 1 << 32     # a length beyond this (or beyond the file) is damage, not a record to allocate

    def __init__(self, files: List[Path], announced: Optional[Dict[str, Tuple[str, int]]]):
        self.files = files
        self.announced = announced
        self._schemas: Dict[int, str] = {}
        self._channels: Dict[int, Tuple[str, str]] = {}
        self.damage = ''
        counts: Dict[str, int] = {}
        for _, topic, _, _ in self._scan(None):
            counts[topic] = counts.get(topic, 0) + 1
        self.readable = counts
        types = {topic: msgtype for topic, msgtype in self._channels.values()}
        types.update({topic: msgtype for topic, (msgtype, _) in (announced or {}).items()})
        self.topics = {topic: (msgtype, max(counts.get(topic, 0), (announced or {}).get(topic, ('', 0))[1]))
                       for topic, msgtype in types.items()}

    @classmethod
    def open_or_none(cls, path: Path) -> Optional['TruncatedMcap']:
        """The salvage reader for an MCAP bag (a .mcap file, or a folder of them with or without metadata.yaml)
        that starts like MCAP and ends early; None for anything else (another format, an intact file)."""
        path = Path(path)
        files = [path] if path.is_file() and path.suffix == '.mcap' else \
            sorted(path.glob('*.mcap')) if path.is_dir() else []
        if not files or any(not cls._starts_like_mcap(f) for f in files):
            return None
        reader = cls(files, cls._announced(path))
        return reader if reader.damage else None

    @classmethod
    def _starts_like_mcap(cls, path: Path) -> bool:
        with open(path, 'rb') as f:
            return f.read(len(cls.MAGIC)) == cls.MAGIC

    @staticmethod
    def _announced(path: Path) -> Optional[Dict[str, Tuple[str, int]]]:
        """topic -> (type, count) from the bag's metadata.yaml, when it has a readable one."""
        import yaml

        metadata = path / 'metadata.yaml' if path.is_dir() else None
        if metadata is None or not metadata.is_file():
            return None
        try:
            info = yaml.safe_load(metadata.read_text())['rosbag2_bagfile_information']
            return {entry['topic_metadata']['name']: (entry['topic_metadata']['type'], int(entry['message_count']))
                    for entry in info['topics_with_message_count']}
        except (yaml.YAMLError, KeyError, TypeError, ValueError, OSError):
            return None

    def unreadable(self, topic: str) -> int:
        return max(0, self.topics.get(topic, ('', 0))[1] - self.readable.get(topic, 0))

    def messages(self, topics: Sequence[str]) -> Iterator[Tuple[str, str, int, bytes]]:
        for _, topic, log_time, data in self._scan(set(topics)):
            yield topic, self._channels_type(topic), log_time, data

    def _channels_type(self, topic: str) -> str:
        return next(msgtype for t, msgtype in self._channels.values() if t == topic)

    # -------------------------------------------------------------------------------------------- scanning

    def _scan(self, topics) -> Iterator[Tuple[int, str, int, bytes]]:
        """(channel id, topic, log time, data) of every readable message (of `topics`, None: all), file by file;
        sets `damage` at the first record that runs past the end of its file."""
        for path in self.files:
            with open(path, 'rb') as f:
                size = f.seek(0, 2)
                f.seek(len(self.MAGIC))
                while True:
                    head = f.read(9)
                    if len(head) < 9:
                        if head or f.tell() < size:
                            self._damaged(path, f.tell() - len(head), 'a record header is cut')
                        elif not self.damage:
                            self._damaged(path, size, 'the file ends without its footer')
                        break
                    opcode, length = head[0], struct.unpack_from('<Q', head, 1)[0]
                    if opcode == 0x02:     # footer: this file is complete
                        break
                    cut = length > self.MAX_RECORD or f.tell() + length > size
                    content = f.read(min(length, max(0, size - f.tell())))
                    if opcode == 0x06:
                        yield from self._chunk(content, cut, topics, path)
                    elif not cut:
                        yield from self._record(opcode, content, topics)
                    if cut:
                        self._damaged(path, f.tell() - len(content) - 9, 'a record is cut')
                        break

    def _damaged(self, path: Path, offset: Optional[int], what: str) -> None:
        if not self.damage:
            where = f'is truncated at byte {offset} ({what}: the recording was cut, no footer)' \
                if offset is not None else f'is damaged ({what})'
            self.damage = f'{path} {where}; the readable messages are read'

    def _record(self, opcode: int, content: bytes, topics) -> Iterator[Tuple[int, str, int, bytes]]:
        if opcode == 0x03:
            schema_id = struct.unpack_from('<H', content)[0]
            self._schemas[schema_id] = _mcap_string(content, 2)[0]
        elif opcode == 0x04:
            channel_id, schema_id = struct.unpack_from('<HH', content)
            topic, _ = _mcap_string(content, 4)
            self._channels[channel_id] = (topic, self._schemas.get(schema_id, ''))
        elif opcode == 0x05 and len(content) >= 22:
            channel_id, _, log_time, _ = struct.unpack_from('<HIQQ', content)
            topic = self._channels.get(channel_id, ('', ''))[0]
            if topics is None or topic in topics:
                yield channel_id, topic, log_time, content[22:]

    def _chunk(self, content: bytes, cut: bool, topics, path: Path) -> Iterator[Tuple[int, str, int, bytes]]:
        from rosbags.rosbag2.storage_mcap import decompress

        if len(content) < 32:
            return
        uncompressed_size, crc = struct.unpack_from('<QI', content, 16)
        compression, offset = _mcap_string(content, 28)
        records = content[offset + 8:]
        if not cut:
            try:
                records = decompress(records, compression, uncompressed_size, crc)
            except Exception:   # noqa: BLE001 - a damaged chunk: its messages are lost, later ones are read
                self._damaged(path, None, 'a chunk does not decompress')
                return
        elif compression:
            return
        messages, position = [], 0
        while position + 9 <= len(records):
            opcode, length = records[position], struct.unpack_from('<Q', records, position + 1)[0]
            if position + 9 + length > len(records):
                break
            messages.extend(self._record(opcode, records[position + 9:position + 9 + length], topics))
            position += 9 + length
        yield from sorted(messages, key=lambda m: m[2])


def _mcap_string(buffer: bytes, offset: int) -> Tuple[str, int]:
    """An MCAP string (uint32 length + UTF-8) at `offset`, and the offset after it."""
    length = struct.unpack_from('<I', buffer, offset)[0]
    return bytes(buffer[offset + 4:offset + 4 + length]).decode('utf-8', 'replace'), offset + 4 + length


# ---------------------------------------------------------------------------------------------- writing

class BagWriter:
    """A rosbag2 MCAP bag folder at `path`, written crash-safely.

    The bag is written as `<parent>/.<name>.partial/<name>`; `close()` (also reached from `with` on an
    error) closes the writer, which writes the MCAP summary and metadata.yaml, and then moves the bag to
    `path`, replacing an earlier bag there. A process killed mid-write leaves only the `.partial` folder,
    never a half-written bag under the final name.
    """

    def __init__(self, path, topics: Dict[str, str]):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path)
        self._staging = self.path.parent / f'.{self.path.name}.partial'
        if self._staging.exists():
            shutil.rmtree(self._staging)      # left by a killed run: never finalised, nothing to keep
        self._staging.mkdir(parents=True)
        self._writer = Writer(self._staging / self.path.name, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections = {topic: self._writer.add_connection(topic, msgtype, typestore=typestore())
                             for topic, msgtype in topics.items()}
        self.counts: Dict[str, int] = {topic: 0 for topic in topics}
        self._closed = False

    def write(self, topic: str, message, log_time_ns: int) -> None:
        """`message`: a message object, or its CDR bytes as received (e.g. an rclpy raw subscription)."""
        data = bytes(message) if isinstance(message, (bytes, bytearray, memoryview)) else serialize(message)
        self._writer.write(self._connections[topic], int(log_time_ns), data)
        self.counts[topic] += 1

    def close(self) -> Path:
        """Finish the bag and move it to its final path (idempotent)."""
        if self._closed:
            return self.path
        self._closed = True
        try:
            self._writer.close()
        finally:
            written = self._staging / self.path.name
            if written.exists():
                _replace_folder(written, self.path)
            shutil.rmtree(self._staging, ignore_errors=True)
        return self.path

    def __enter__(self) -> 'BagWriter':
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _replace_folder(new: Path, target: Path) -> None:
    """Move folder `new` to `target`, replacing an existing `target` (the old one is removed after)."""
    old = None
    if target.exists():
        old = new.parent / f'{target.name}.old'
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_bag(path, topics: Optional[Sequence[str]] = None) -> List[BagMessage]:
    """All messages (of `topics`, default all) of a bag, decoded: for tests and small tools."""
    reader = BagReader(path)
    try:
        return list(reader.messages(topics if topics is not None else list(reader.topics)))
    finally:
        reader.close()
