"""jobs.yaml: loaded and validated up front into the dataclasses of tvseg.config.

Every error names the file, the line and the dotted key, and where a key is
unknown it lists the valid ones.  Nothing is written before this succeeds.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Callable

import yaml

from tvseg.config import (
    EXECUTORS,
    RUNTIMES,
    ContainerConfig,
    JobConfig,
    ShardingConfig,
    SlurmConfig,
    WorkerConfig,
    parse_size,
    parse_slurm_mem,
    parse_slurm_time,
)
from tvseg.errors import ConfigError
from tvseg.remote import SshConfig, split_remote
from worker.stages import stage_class, stage_names

class _Reader:
    """Walks the YAML node tree so every error can cite a line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def fail(self, node: yaml.Node | None, key: str, problem: str) -> ConfigError:
        where = f"{self.path}:{node.start_mark.line + 1}" if node is not None else str(self.path)
        return ConfigError(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")

    def mapping(self, node: yaml.Node, key: str, valid: list[str]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, key, f"expected a mapping with keys {', '.join(valid)}")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            name = str(knode.value)
            full = f"{key}.{name}" if key else name
            if name not in valid:
                raise self.fail(knode, full, f"unknown key; valid keys: {', '.join(valid)}")
            if name in out:
                raise self.fail(knode, full, "key given twice")
            out[name] = (knode, vnode)
        return out

    def scalar(self, node: yaml.Node, key: str, kind: str) -> Any:
        value = yaml.safe_load(yaml.serialize(node)) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, key, f"expected {kind}, got a {'list' if isinstance(node, yaml.SequenceNode) else 'mapping'}")
        return value

    def typed(self, node: yaml.Node, key: str, kind: str, convert: Callable[[Any], Any]) -> Any:
        value = self.scalar(node, key, kind)
        try:
            return convert(value)
        except (TypeError, ValueError) as exc:
            raise self.fail(node, key, f"expected {kind}, got {value!r}" + (f" ({exc})" if str(exc) else "")) from None

    def text(self, node: yaml.Node, key: str, kind: str, convert: Callable[[str], Any]) -> Any:
        """A scalar as written, not as YAML reads it (YAML 1.1 reads 04:00:00 as 14400)."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, key, f"expected {kind}")
        try:
            return convert(str(node.value))
        except ValueError as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise self.fail(node, key, f"expected {kind}, got {node.value!r}{detail}") from None

    def strings(self, node: yaml.Node, key: str) -> tuple[str, ...]:
        if isinstance(node, yaml.ScalarNode):
            return (self.typed(node, key, "a string", _str),)
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, key, "expected a list of strings")
        return tuple(self.typed(item, f"{key}[{i}]", "a string", _str) for i, item in enumerate(node.value))


def _str(v: Any) -> str:
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        raise ValueError("")
    return str(v)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("")
    return v


def _positive(v: Any) -> int:
    v = _int(v)
    if v < 1:
        raise ValueError("must be at least 1")
    return v


def _nonneg(v: Any) -> int:
    v = _int(v)
    if v < 0:
        raise ValueError("must not be negative")
    return v


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("")
    if v <= 0:
        raise ValueError("must be positive")
    return float(v)


def _above_one(v: Any) -> float:
    v = _number(v)
    if v <= 1:
        raise ValueError("must be more than 1")
    return v


def _sbatch_value(v: Any) -> str:
    v = _str(v)
    if "\n" in v or "\r" in v:
        raise ValueError("a line break cannot go into an sbatch option")
    if '"' in v and "'" in v:
        raise ValueError("sbatch cannot take a value with both kinds of quote")
    return v


def _slurm_time(v: str) -> str:
    parse_slurm_time(v)
    return v


def _slurm_mem(v: Any) -> str:
    v = _str(v)
    parse_slurm_mem(v)
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("")
    return v


def _size(v: Any) -> int:
    if isinstance(v, bool) or v is None:
        raise ValueError("")
    size = parse_size(v)
    if size < 1:
        raise ValueError("must be positive")
    return size


_SLURM_KEYS = {
    "partition": ("a string", _sbatch_value),
    "time": ("a SLURM time like 04:00:00", _slurm_time),
    "mem": ("a SLURM memory like 16G", _slurm_mem),
    "cpus-per-task": ("a positive integer", _positive),
    "gpus": ("a non-negative integer", _nonneg),
    "account": ("a string", _sbatch_value),
    "qos": ("a string", _sbatch_value),
    "constraint": ("a string", _sbatch_value),
    "array-parallelism": ("a positive integer", _positive),
    "max-mem": ("a SLURM memory like 64G", _slurm_mem),
    "max-time": ("a SLURM time like 1-00:00:00", _slurm_time),
    "grow-factor": ("a number above 1", _above_one),
    "signal-delay": ("a positive number of seconds", _positive),
}
_SLURM_TIME_KEYS = ("time", "max-time")
def _one_line(v: Any) -> str:
    v = _str(v)
    if "\n" in v or "\r" in v:
        raise ValueError("one line, without line breaks")
    return v


def _port(v: Any) -> int:
    v = _positive(v)
    if v > 65535:
        raise ValueError("must be at most 65535")
    return v


def _bind_path(v: Any) -> str:
    v = _one_line(v)
    if "," in v:
        raise ValueError("a bind cannot hold ',' (Apptainer separates binds with it)")
    return v


_WORKER_KEYS = {
    "queue_depth": ("a positive integer", _positive),
    "scratch_dir": ("a path", _str),
    "scratch_budget": ("a size like 50G", _size),
    "max_attempts": ("a positive integer", _positive),
    "heartbeat_seconds": ("a positive number", _number),
    "python": ("the path of the worker's python", _one_line),
}
_SSH_KEYS = {
    "user": ("a user name", _one_line),
    "port": ("a port number", _port),
    "identity_file": ("a path", _one_line),
    "connect_timeout": ("a positive number of seconds", _positive),
    "retries": ("a non-negative integer", _nonneg),
    "retry_delay": ("a positive number of seconds", _number),
}
_CONTAINER_KEYS = {
    "image": ("the path of a .sif image", _one_line),
    "runtime": (f"one of {', '.join(RUNTIMES)}", _str),
    "gpu": ("true or false", _bool),
    "python": ("the path of python inside the image", _one_line),
}
_SHARDING_KEYS = {
    "files_per_shard": ("a positive integer", _positive),
    "bytes_per_shard": ("a size like 100G", _size),
}
_TOP_KEYS = ["name", "workdir", "inputs", "inputs_from", "executor", "sharding", "slurm", "worker", "stage_settings",
             "ssh", "container"]


def load_config(path: str | os.PathLike[str]) -> JobConfig:
    """Read and validate jobs.yaml.  Raises ConfigError naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (give the path of a jobs.yaml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    r = _Reader(path.resolve())
    if root is None:
        raise r.fail(None, "", "empty file; required keys: name, workdir, inputs or inputs_from")
    top = r.mapping(root, "", _TOP_KEYS)
    for required in ("name", "workdir"):
        if required not in top:
            raise r.fail(root, required, "required key missing")
    if "inputs" not in top and "inputs_from" not in top:
        raise r.fail(root, "inputs", "no inputs: give 'inputs' (glob patterns) and/or 'inputs_from' (a file of paths)")

    name = r.typed(top["name"][1], "name", "a string", _str)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise r.fail(top["name"][1], "name", f"{name!r} is not a job name (letters, digits, '.', '_', '-')")
    workdir = r.base / r.typed(top["workdir"][1], "workdir", "a path", _str)
    inputs: tuple[str, ...] = ()
    if "inputs" in top:
        inputs = r.strings(top["inputs"][1], "inputs")
        if not inputs:
            raise r.fail(top["inputs"][1], "inputs", "empty list; give at least one glob pattern")
        for i, pattern in enumerate(inputs):
            if split_remote(pattern) and ("\n" in pattern or "\r" in pattern):
                node = top["inputs"][1]
                raise r.fail(node.value[i] if isinstance(node, yaml.SequenceNode) else node, f"inputs[{i}]",
                             "a remote pattern cannot hold a line break")
    inputs_from = None
    if "inputs_from" in top:
        inputs_from = r.base / r.typed(top["inputs_from"][1], "inputs_from", "a path", _str)
        if not inputs_from.is_file():
            raise r.fail(top["inputs_from"][1], "inputs_from", f"no such file: {inputs_from}")
    executor = "auto"
    if "executor" in top:
        executor = r.typed(top["executor"][1], "executor", "a string", _str)
        if executor not in EXECUTORS:
            raise r.fail(top["executor"][1], "executor", f"{executor!r} is not one of {', '.join(EXECUTORS)}")

    sharding = ShardingConfig()
    if "sharding" in top:
        values = _section(r, top["sharding"][1], "sharding", _SHARDING_KEYS)
        sharding = ShardingConfig(
            files_per_shard=values.get("files_per_shard"), bytes_per_shard=values.get("bytes_per_shard")
        )

    slurm = SlurmConfig()
    if "slurm" in top:
        node = top["slurm"][1]
        valid = [*_SLURM_KEYS, "extra-sbatch", "setup"]
        values = _section(r, node, "slurm", _SLURM_KEYS, extra=["extra-sbatch", "setup"])
        extra: dict[str, str] = {}
        entries = r.mapping(node, "slurm", valid)
        if "setup" in entries:
            values["setup"] = _lines(r, entries["setup"][1], "slurm.setup", _one_line)
        if "extra-sbatch" in entries:
            enode = entries["extra-sbatch"][1]
            if not isinstance(enode, yaml.MappingNode):
                raise r.fail(enode, "slurm.extra-sbatch", "expected a mapping of sbatch option names to values")
            for k, v in enode.value:
                extra[str(k.value)] = r.typed(v, f"slurm.extra-sbatch.{k.value}", "a string", _sbatch_value)
        for key in _SLURM_TIME_KEYS:
            if values.get(key) is not None:
                values[key] = r.text(entries[key][1], f"slurm.{key}", _SLURM_KEYS[key][0], _slurm_time)
        slurm = SlurmConfig(**{k.replace("-", "_"): v for k, v in values.items()}, extra_sbatch=extra)
        _check_slurm(r, slurm, entries)

    worker = _worker(r, top)
    ssh = _ssh(r, top["ssh"][1]) if "ssh" in top else SshConfig()
    container = _container(r, top["container"][1]) if "container" in top else None
    if container is not None and worker.python is not None:
        raise r.fail(top["container"][1], "container", "give worker.python or container, not both (the "
                     "container's python is container.python)")
    return JobConfig(
        name=name,
        workdir=workdir,
        source=path.resolve(),
        inputs=inputs,
        inputs_from=inputs_from,
        executor=executor,
        sharding=sharding,
        slurm=slurm,
        worker=worker,
        ssh=ssh,
        container=container,
    )


def _lines(r: _Reader, node: yaml.Node, key: str, convert: Callable[[Any], Any]) -> tuple:
    if not isinstance(node, yaml.SequenceNode):
        raise r.fail(node, key, "expected a list")
    return tuple(r.typed(item, f"{key}[{i}]", "a string of one line", convert) for i, item in enumerate(node.value))


def _ssh(r: _Reader, node: yaml.Node) -> SshConfig:
    extra = ["options", "rsync_options"]
    values = _section(r, node, "ssh", _SSH_KEYS, extra=extra)
    entries = r.mapping(node, "ssh", [*_SSH_KEYS, *extra])
    for key in extra:
        if key in entries:
            values[key] = _lines(r, entries[key][1], f"ssh.{key}", _one_line)
    for i, option in enumerate(values.get("options", ())):
        if "=" not in option and " " not in option.strip():
            raise r.fail(entries["options"][1].value[i], f"ssh.options[{i}]",
                         f"{option!r} is not an ssh option (write Key=value, as for ssh -o)")
    if values.get("identity_file") is not None:
        path = r.base / os.path.expanduser(values["identity_file"])
        if not path.is_file():
            raise r.fail(entries["identity_file"][1], "ssh.identity_file", f"no such file: {path}")
        values["identity_file"] = str(path)
    return SshConfig(**{k: v for k, v in values.items() if v is not None})


def _container(r: _Reader, node: yaml.Node) -> ContainerConfig:
    extra = ["binds", "options"]
    values = _section(r, node, "container", _CONTAINER_KEYS, extra=extra)
    entries = r.mapping(node, "container", [*_CONTAINER_KEYS, *extra])
    if values.get("image") is None:
        raise r.fail(node, "container.image", "required key missing (the .sif the worker runs in)")
    values["image"] = str(r.base / os.path.expanduser(values["image"]))
    runtime = values.get("runtime")
    if runtime is not None and runtime not in RUNTIMES:
        raise r.fail(entries["runtime"][1], "container.runtime",
                     f"{runtime!r} is not one of {', '.join(RUNTIMES)} (leave it out: the node's own is found)")
    if "binds" in entries:
        values["binds"] = _lines(r, entries["binds"][1], "container.binds", _bind_path)
    if "options" in entries:
        values["options"] = _lines(r, entries["options"][1], "container.options", _one_line)
    return ContainerConfig(**{k: v for k, v in values.items() if v is not None})


def _check_slurm(r: _Reader, slurm: SlurmConfig, entries: dict[str, tuple[yaml.Node, yaml.Node]]) -> None:
    """What holds between slurm keys: caps not below the values, the warning inside the limit."""
    def node(key: str) -> yaml.Node | None:
        return entries[key][1] if key in entries else None

    time_s = parse_slurm_time(slurm.time)
    if slurm.signal_delay >= time_s:
        key = "signal-delay" if "signal-delay" in entries else "time"
        raise r.fail(node(key), f"slurm.{key}", f"slurm.signal-delay ({slurm.signal_delay} s) must be shorter than "
                     f"the time limit ({slurm.time} = {time_s} s)")
    if slurm.max_mem is not None and parse_slurm_mem(slurm.max_mem) < parse_slurm_mem(slurm.mem):
        raise r.fail(node("max-mem"), "slurm.max-mem", f"{slurm.max_mem} is below slurm.mem ({slurm.mem})")
    if slurm.max_time is not None and parse_slurm_time(slurm.max_time) < time_s:
        raise r.fail(node("max-time"), "slurm.max-time", f"{slurm.max_time} is below slurm.time ({slurm.time})")


def _section(r: _Reader, node: yaml.Node, key: str, schema: dict, extra: list[str] = ()) -> dict[str, Any]:
    entries = r.mapping(node, key, [*schema, *extra])
    values: dict[str, Any] = {}
    for name, (_k, vnode) in entries.items():
        if name in extra:
            continue
        if isinstance(vnode, yaml.ScalarNode) and vnode.tag.endswith(":null"):
            values[name] = None
            continue
        kind, convert = schema[name]
        values[name] = r.typed(vnode, f"{key}.{name}", kind, convert)
    return values


def _worker(r: _Reader, top: dict) -> WorkerConfig:
    values: dict[str, Any] = {}
    stages: tuple[str, ...] = WorkerConfig.stages
    if "worker" in top:
        node = top["worker"][1]
        values = _section(r, node, "worker", _WORKER_KEYS, extra=["stages"])
        entries = r.mapping(node, "worker", [*_WORKER_KEYS, "stages"])
        if "stages" in entries:
            snode = entries["stages"][1]
            stages = r.strings(snode, "worker.stages")
            if not stages:
                raise r.fail(snode, "worker.stages", f"empty list; registered stages: {', '.join(stage_names())}")
            for i, name in enumerate(stages):
                if name not in stage_names():
                    raise r.fail(snode.value[i] if isinstance(snode, yaml.SequenceNode) else snode,
                                 f"worker.stages[{i}]",
                                 f"unknown stage {name!r}; registered stages: {', '.join(stage_names())}")
            if len(set(stages)) != len(stages):
                raise r.fail(snode, "worker.stages", "a stage is listed twice")

    settings_nodes: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    if "stage_settings" in top:
        settings_nodes = r.mapping(top["stage_settings"][1], "stage_settings", list(stages))
    stage_settings = {
        name: _stage_settings(r, stage_class(name).Settings, name, settings_nodes.get(name, (None, None))[1])
        for name in stages
    }
    if values.get("python") is not None:
        values["python"] = str(r.base / os.path.expanduser(values["python"]))
    return WorkerConfig(**values, stages=stages, stage_settings=stage_settings)


def _stage_settings(r: _Reader, cls: type, stage: str, node: yaml.Node | None) -> Any:
    """Fill a stage's Settings dataclass; `path` fields resolve against the YAML's folder."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    key = f"stage_settings.{stage}"
    if node is not None:
        for name, (_k, vnode) in r.mapping(node, key, list(fields)).items():
            f = fields[name]
            kind, convert = _FIELD_TYPES.get(f.metadata.get("kind", _kind_of(f)), ("a string", _str))
            value = r.typed(vnode, f"{key}.{name}", kind, convert)
            if f.metadata.get("path"):
                value = str(r.base / value)
            values[name] = value
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise r.fail(node, f"{key}.{missing[0]}", "required key missing")
    for name, f in fields.items():  # relative path defaults resolve against the YAML's folder too
        if name not in values and f.metadata.get("path") and isinstance(f.default, str):
            values[name] = str(r.base / f.default)
    try:
        return cls(**values)
    except ValueError as exc:  # the stage's own checks across its settings
        raise r.fail(node, key, str(exc)) from None


def _kind_of(f: dataclasses.Field) -> str:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return {"bool": "bool", "int": "int", "float": "float"}.get(t, "str")


_FIELD_TYPES: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "bool": ("true or false", _bool),
    "int": ("a positive integer", _positive),
    "float": ("a positive number", _number),
    "str": ("a string", _str),
}
