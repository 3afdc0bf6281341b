"""Configuration: one frozen pydantic model per component, composed into :class:`AurasConfig`.

Every field has a default, a constraint and a description. ``extra="forbid"`` makes a misspelt key
an error (with a did-you-mean), and every bad value is reported as ``field: value given -> what is
allowed``. Presets live in ``configs/*.yaml`` (installed as ``auras.configs``); ``load_config``
resolves a preset or a file, then ``--set a.b=value`` overrides, then validates once.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from auras.devices import DTYPES
from auras.errors import ConfigError, unknown_name_message
from auras.registry import POLICIES, policy_config_class
from auras.staleness import parse_strategy, resolve_strategy
from auras.tasks import TASKS  # pure-Python catalogue; no simulator import

__all__ = [
    "AurasConfig",
    "BenchConfig",
    "EnvConfig",
    "PipelineConfig",
    "PolicyConfig",
    "ServeConfig",
    "StalenessConfig",
    "config_hash",
    "load_config",
    "preset_names",
]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class EnvConfig(_Section):
    """The simulated task the agent acts in (envs/)."""

    task: str = Field("push-v3", min_length=1, description="Task name: a Meta-World v3 task or an auras task.")
    horizon: int = Field(200, ge=10, le=5000, description="Control steps per episode before truncation.")
    image_size: int = Field(84, ge=16, le=512, description="Camera image height and width in pixels.")
    terminate_on_success: bool = Field(True, description="End the episode at the first successful step.")

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in TASKS:
            raise ValueError(unknown_name_message("task", task, TASKS))
        return task


class PolicyConfig(_Section):
    """Which policy the agent runs and where."""

    type: str = Field(
        "expert",
        min_length=1,
        description="Policy type: any name in the policy registry (auras.registry.POLICIES: shipped, registered "
        "with auras.register_policy, or from an installed package's 'auras.policies' entry point). Shipped: "
        "tiny-vla (autoregressive VLA), tiny-dp (diffusion policy), expert (the scripted expert reading the "
        "simulator state; privileged: a real robot cannot run it).",
    )
    checkpoint: str | None = Field(
        None,
        min_length=1,
        description="Checkpoint of a learned policy: a shipped name or a directory. Default: the shipped "
        "checkpoint named like the policy type.",
    )
    execute_steps: int | None = Field(
        None, ge=1, le=64, description="Actions of each predicted chunk to execute; default: the checkpoint's."
    )
    device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:\d+)?)$",
        description="Torch device of the worker that hosts the policy: cpu, cuda or cuda:N (ray backend: cpu or "
        "cuda; Ray assigns the GPU). No fallback: a device this machine lacks is an error.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description=f"Weights and activations dtype on the hosting worker: one of {list(DTYPES)}."
    )
    compile: Literal["off", "default", "reduce-overhead"] = Field(
        "off",
        description="torch.compile each stage (perception stages, one denoising step, one merged causal pass) "
        "with static shapes: default (inductor kernels) or reduce-overhead (also CUDA graphs on a GPU). "
        "Compile time counts as startup.",
    )
    torch_threads: int = Field(1, ge=1, le=256, description="Torch intra-op threads per stage.")
    delay_perception_ms: float = Field(
        0.0, ge=0.0, le=10_000.0, description="Injected latency: extra ms per request's whole perception (sweeps)."
    )
    delay_generation_ms: float = Field(
        0.0, ge=0.0, le=10_000.0, description="Injected latency: extra ms per request's whole generation (sweeps)."
    )
    scale_perception: float = Field(
        1.0, gt=0.0, le=64.0, description="Perception size factor (depth or width); != 1 builds RANDOM weights."
    )
    scale_generation: float = Field(
        1.0, gt=0.0, le=64.0, description="Generation size factor (depth or width); != 1 builds RANDOM weights."
    )

    model: dict[str, Any] = Field(
        default_factory=dict,
        description="The policy's model settings, validated by its registered configuration class (keys and "
        "defaults: auras/policies/<name>/configuration.py). On a trained checkpoint only the serving settings "
        "may change (tiny-dp: num_inference_steps, execute_steps, ...); the others are set by `auras train --set`.",
    )

    @field_validator("type")
    @classmethod
    def _registered(cls, name: str) -> str:
        return _registered_policy(name)

    @field_validator("model")
    @classmethod
    def _model_settings(cls, model: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        policy = info.data.get("type")
        if not model or policy is None:  # no settings, or the type itself was refused
            return model
        settings = policy_config_class(policy)
        if settings is None:
            raise ValueError(f"policy.model: policy {policy!r} has no model settings (register a configuration "
                             f"class with register_policy(name, factory, config=...)); got {sorted(model)}")
        try:
            given = settings.parse(model).model_dump(mode="json")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return {key: given[key] for key in model}  # the validated values

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false


class PipelineConfig(_Section):
    """How perception and generation are scheduled (see auras/pipeline/frames.py for frames)."""

    mode: Literal["sequential", "decoupled", "parallel", "pipeline", "auras"] = Field(
        "sequential",
        description="Execution mode. sequential: perception then generation per observation; decoupled: "
        "perception loops on the newest observation, generation uses its latest result; parallel: "
        "`workers` independent copies of the policy, no coordination; pipeline: frames with a private "
        "(stale) context per request; auras: frames + public context.",
    )
    backend: Literal["local", "ray"] = Field(
        "local",
        description="Where stages run. local: threads in this process; ray: Ray actors (perception and "
        "generation each on its own device) in a placement group.",
    )
    workers: int = Field(2, ge=1, le=64, description="Mode parallel: independent policy workers.")
    pp_perception: int = Field(1, ge=1, le=16, description="Perception stages (frames in perception).")
    pp_generation: int = Field(1, ge=1, le=64, description="Generation stages a request's iterations spread over.")
    fetch_offset: Literal[0, -1] = Field(
        0,
        description="0: perception then generation within a frame, generation reads this frame's context; "
        "-1: both concurrently, generation reads the previous frame's context.",
    )
    alpha: float = Field(
        0.0, ge=0.0, le=10.0, description="Diffusion step skew: stage i gets a share proportional to exp(i*alpha)."
    )
    ray_address: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Ray backend: a running cluster to join (auto, HOST:PORT or ray://HOST:PORT); "
        "None starts a local Ray.",
    )
    placement: Literal["pack", "spread"] = Field(
        "pack",
        description="Ray backend: pack (perception and generation side by side when one node holds both) "
        "or spread (on different nodes).",
    )
    worker_timeout_s: float = Field(
        30.0,
        gt=0.0,
        le=3600.0,
        description="Ray backend: a call not answered within this is a dead worker; it is replaced "
        "(frame modes, sequential, decoupled: both actors; parallel: that worker) and the step raises "
        "WorkerRestartedError.",
    )
    frame_period_ms: float | Literal["auto"] = Field(
        0.0,
        description="Paced frames: start a frame every this many ms (agent.stream, the bridge, the bench), so "
        "actions come out at even intervals; 0: back to back; auto: a little above the recent slow frames "
        "(auras/pipeline/pacing.py).",
    )
    pacing_quantile: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Paced frames, auto (and the adaptive controller): the period is pacing_margin x this quantile "
        "of the recent frame times; lower costs less rate and lets more frames overrun their tick.",
    )
    pacing_margin: float = Field(
        1.05,
        ge=1.0,
        le=2.0,
        description="Paced frames, auto (and the adaptive controller): the period is this x pacing_quantile of the "
        "recent frame times. Its rate cost is at least margin - 1; on a machine with steady frames, a margin "
        "near 1 keeps intervals even for less.",
    )
    release: Literal["at_once", "on_tick"] = Field(
        "at_once",
        description="Paced frames: hand each action out as soon as it is ready (at_once), or at the next tick "
        "(on_tick: actions a period apart, each held for the rest of its period).",
    )
    emit: Literal["own", "public"] = Field(
        "own", description="Autoregressive auras: emit the finishing request's own tokens, or the public snapshot."
    )
    controller: Literal["static", "adaptive"] = Field(
        "static",
        description="pipeline / auras: static keeps pp_generation; adaptive re-plans it online to hold target_hz, "
        "and paces frames (auras/pipeline/controller.py; every depth is a session of the same engine, so a re-plan "
        "places no new workers).",
    )
    target_hz: float = Field(
        0.0, ge=0.0, le=1000.0, description="Adaptive controller: the action rate to hold; 0: as fast as it goes."
    )
    staleness_bound_ms: float = Field(
        0.0, ge=0.0, le=60_000.0, description="Adaptive controller: rule out depths whose actions are older; 0: none."
    )
    controller_window: int = Field(
        20, ge=2, le=10_000, description="Adaptive controller: measured frames per decision."
    )

    @field_validator("frame_period_ms", mode="before")
    @classmethod
    def _period(cls, value: Any) -> Any:
        if value == "auto" or (
            isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 60_000.0
        ):
            return value
        raise ValueError(f"expected milliseconds in [0, 60000] or 'auto', got {value!r}")


class BenchConfig(_Section):
    """`auras bench`: what to compare (policies x tasks x modes), episodes, seeds, clock and output."""

    policies: list[str] = Field(
        default_factory=lambda: ["tiny-dp", "tiny-vla"],
        max_length=8,
        description="Policies to compare (each with its configs/pipeline-<policy>.yaml settings); empty: policy.type.",
    )
    tasks: list[str] = Field(
        default_factory=lambda: ["push-v3"],
        max_length=64,
        description="Tasks to run; empty: env.task. Default: a task whose success collapses with stale actions.",
    )
    modes: list[Literal["sequential", "decoupled", "parallel", "pipeline", "auras"]] = Field(
        default_factory=lambda: ["sequential", "pipeline", "auras"],
        max_length=5,
        description="Modes to compare side by side; empty: pipeline.mode.",
    )
    accuracy: bool = Field(
        True, description="Run closed-loop episodes; false: throughput only (e.g. random-weight scale sweeps)."
    )
    episodes: int = Field(30, ge=1, le=100_000, description="Closed-loop episodes per cell for accuracy.")
    envs: int = Field(
        1, ge=1, le=64,
        description="Episodes run at once, each env a session of one frame engine (one model, every env's frames "
        "batched; modes sequential, pipeline and auras, others run one at a time). Under the frame clock an "
        "episode acts as it does alone up to the batched kernels' float rounding (docs/fleet.md); under the "
        "virtual and realtime clocks the robot's time is the machine's, so envs sharing it measure a fleet "
        "(docs/bench.md says why 1 is the default).",
    )
    seed: int = Field(
        100_000,
        ge=0,
        description="First evaluation seed; episode i uses seed + i. Held out from training data, "
        "which `auras collect` draws from seeds below 100000.",
    )
    clock: Literal["frame", "virtual", "realtime"] = Field(
        "virtual",
        description="Time model for accuracy. frame: the env waits for each action; virtual: simulated time "
        "advances by the agent's measured compute time while the robot keeps executing its last chunk; "
        "realtime: the env runs at wall-clock pace in its own loop and the agent acts on the newest frame.",
    )
    camera_hz: float = Field(
        30.0, gt=0, le=1000, description="Realtime clock: the robot's camera rate (frames it may send per second)."
    )
    action_ttl_ms: float = Field(
        250.0, gt=0, description="Realtime clock: the robot never applies an action whose newest input is older than "
        "this (robot-sim's --ttl-ms).",
    )
    served: bool = Field(
        False, description="Realtime clock: run the episodes through `auras serve` (a server process per cell) and "
        "the robot client, the path a robot uses, instead of an agent in this process.",
    )
    stream_steps: int = Field(
        300, ge=10, le=1_000_000, description="Length of the pre-recorded observation stream for throughput."
    )
    warmup_steps: int = Field(30, ge=0, le=100_000, description="Stream steps excluded from throughput as warm-up.")
    out: str = Field("runs/bench", min_length=1, description="Directory for results.json and the plots.")
    plots: bool = Field(True, description="Write PNG plots next to results.json.")

    @model_validator(mode="after")
    def _served_is_realtime(self) -> BenchConfig:
        if self.served and self.clock != "realtime":
            raise ValueError(
                f"bench.served: the served path runs on the robot's own clock (bench.clock realtime), "
                f"got {self.clock!r}"
            )
        return self

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str]) -> list[str]:
        for task in tasks:
            EnvConfig._known_task(task)
        return tasks

    @field_validator("policies")
    @classmethod
    def _registered_policies(cls, names: list[str]) -> list[str]:
        return [_registered_policy(name) for name in names]

    @field_validator("policies", "tasks", "modes")
    @classmethod
    def _no_repeats(cls, values: list[str]) -> list[str]:
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"each entry at most once; repeated: {repeated}")
        return values


def _registered_policy(name: str) -> str:
    if name not in POLICIES:
        raise ValueError(unknown_name_message("policy", name, POLICIES.names()))
    return name


class ServeConfig(_Section):
    """How `auras serve` shares work between robot sessions (each session has its own pipeline)."""

    engine: Literal["auto", "shared", "per-robot"] = Field(
        "auto",
        description="shared: one frame engine (one copy of the model) serves every robot, each frame one "
        "batched perception and one batched generation call over every robot's requests "
        "(auras/pipeline/engine.py; modes sequential, pipeline and auras with a static controller); "
        "per-robot: each robot gets an agent and a model of its own; auto: shared where it can run.",
    )
    engines: int = Field(
        1, ge=1, le=64,
        description="shared engine: how many engines (each its own copy of the model, e.g. one per GPU; on Ray its "
        "own actors); each new robot joins the least loaded, and an engine's failure restarts only its robots.",
    )
    engine_wait_ms: float = Field(
        5.0, ge=0.0, le=100.0, description="shared engine: longest a robot's frame waits for other robots' frames."
    )
    perception: Literal["auto", "separate", "shared"] = Field(
        "auto",
        description="per-robot agents (serve.engine): separate: each session runs its own copy of perception; "
        "shared: one perception model serves every session, its calls batched across robots "
        "(auras/bridge/batcher.py; needs the local backend and pp_perception 1); auto: shared where it can "
        "run, else separate.",
    )
    batch_wait_ms: float = Field(
        10.0, ge=0.0, le=100.0, description="shared: longest a perception call waits for other robots' calls."
    )
    max_batch: int = Field(16, ge=1, le=256, description="shared: most observations in one perception call.")
    max_sessions: int = Field(
        16, ge=1, le=1024, description="Most robot sessions at once, both protocols (one more is refused at once)."
    )
    session_timeout_s: float = Field(
        10.0, ge=0.5, le=3600.0, description="zmq: close a session silent this long (its client sends heartbeats)."
    )
    openpi_idle_timeout_s: float = Field(
        300.0, ge=0.5, le=86400.0, description="openpi: close a connection that sent nothing this long (openpi robots "
        "send nothing between episodes, so this is generous).",
    )
    max_message_mb: float = Field(16.0, gt=0.0, le=1024.0, description="Largest message either protocol reads (MiB).")
    openpi_keys: dict[str, str] = Field(
        default_factory=lambda: {
            "image.front": "observation/image", "state": "observation/state", "instruction": "prompt"
        },
        description="`auras serve --protocol openpi`: auras target (image.<camera>, state, instruction, and "
        "optionally step: the episode's step counter, whose restart resets the agent) -> openpi observation key.",
    )

    @field_validator("openpi_keys")
    @classmethod
    def _targets(cls, keys: dict[str, str]) -> dict[str, str]:
        plain = ("state", "instruction", "step")
        bad = [t for t in keys if t not in plain and not (t.startswith("image.") and len(t) > 6)]
        if bad:
            raise ValueError(f"targets must be image.<camera>, state, instruction or step, got {bad}")
        return keys


class StalenessConfig(_Section):
    """What the robot side does about acting on old observations (auras/staleness.py)."""

    strategy: str = Field(
        "auto",
        description="Robot-side fixes: none, or a '+'-joined set of rtc (denoising policies), roll_forward, "
        "chunk_blend; the public context is mode auras (always on there; naming public_context elsewhere is an "
        "error); auto: none.",
    )
    blend_old: float = Field(
        0.3, ge=0.0, le=1.0, description="chunk_blend: weight of the old chunk's overlapping rows."
    )
    queue_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="chunk_blend: request when this fraction of a chunk or less is pending."
    )
    action_scale: float = Field(
        0.01, gt=0.0, description="roll_forward: state displacement per unit action per control step."
    )
    rolled_dims: int = Field(3, ge=0, le=64, description="roll_forward: leading state dims the actions displace.")
    execution_horizon: int = Field(
        0,
        ge=0,
        description="rtc: send an observation only once this many rows of the current chunk have run (the RTC "
        "paper's execution horizon); 0: whenever the agent can take one.",
    )
    rtc_schedule: Literal["exp", "linear"] = Field(
        "exp",
        description="rtc: how the guide's weights fall from 1 (the rows that run before the chunk lands) to 0 (the "
        "rows left free): LeRobot's prefix_attention_schedule EXP or LINEAR.",
    )
    rtc_guidance: Literal["pull", "lerobot"] = Field(
        "pull",
        description="rtc: how strongly a flow step follows the guide. pull: the clean prediction pulled onto the "
        "guide rows, velocity re-derived (weight 1/t); lerobot: LeRobot's RTCProcessor (weight "
        "min(rtc_max_guidance, (t^2 + (1-t)^2) / (t (1-t))), padded action dims guided to 0).",
    )
    rtc_max_guidance: float = Field(10.0, gt=0.0, description="rtc_guidance lerobot: the largest guidance weight.")

    @field_validator("strategy")
    @classmethod
    def _parses(cls, text: str) -> str:
        if text != "auto":
            try:
                parse_strategy(text)
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("staleness.strategy: ")) from None
        return text


class AurasConfig(_Section):
    """The whole configuration of an agent and its benchmark."""

    env: EnvConfig = Field(default_factory=EnvConfig, description="Task and episode settings.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Policy and device.")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="Execution mode and backend.")
    bench: BenchConfig = Field(default_factory=BenchConfig, description="Benchmark settings.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="`auras serve` settings.")
    staleness: StalenessConfig = Field(default_factory=StalenessConfig, description="Staleness strategy.")

    @model_validator(mode="after")
    def _controller_fits_mode(self) -> AurasConfig:
        p = self.pipeline
        if p.controller == "adaptive" and p.mode not in ("pipeline", "auras"):
            raise ValueError(
                f"pipeline.controller adaptive: re-plans a frame pipeline (mode pipeline or auras), got mode {p.mode!r}"
            )
        return self

    @model_validator(mode="after")
    def _strategy_fits_mode(self) -> AurasConfig:
        try:
            resolve_strategy(self.staleness.strategy, self.pipeline.mode)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


def preset_names() -> list[str]:
    """Names of the YAML presets shipped in configs/ (installed as auras.configs)."""
    return sorted(p.name[:-5] for p in resources.files("auras.configs").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(source: str | Path) -> dict[str, Any]:
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        text = path.read_text()
    else:  # a preset name
        name = str(source)
        if name not in preset_names():
            raise ConfigError(unknown_name_message("config preset", name, preset_names()))
        text = resources.files("auras.configs").joinpath(f"{name}.yaml").read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {str(source)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(source)!r}: expected a mapping at top level, got {type(data).__name__}")
    return data


def _apply_override(data: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE with a dotted key (e.g. bench.episodes=5), got {assignment!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _field_names(model: type[BaseModel], loc: Iterable[Any]) -> list[str]:
    """The allowed field names at ``loc`` (for did-you-mean on unknown keys)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent, name = err["loc"][:-1], str(err["loc"][-1])
            allowed = _field_names(AurasConfig, parent)
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"{loc}: unknown field{hint} Allowed here: {', '.join(allowed)}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if loc and msg.startswith(loc):  # a section's own validator named the key already
            lines.append(msg)
            continue
        lines.append(f"{loc}: got {err['input']!r}; {msg}" if loc else msg)  # no loc: a rule across sections
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_config(
    source: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
) -> AurasConfig:
    """Resolve a configuration: ``base`` dict, then preset name or YAML file, then KEY=VALUE overrides.

    Raises ConfigError naming the field, the value given and what is allowed.
    """
    data: dict[str, Any] = json.loads(json.dumps(dict(base or {})))
    if source is not None:
        _deep_merge(data, _read_yaml(source))
    for assignment in overrides:
        _apply_override(data, assignment)
    try:
        return AurasConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


def _deep_merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def config_hash(config: AurasConfig) -> str:
    """A short stable hash of the resolved configuration (same config -> same hash)."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
