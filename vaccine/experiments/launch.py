"""A training stage on several GPUs: its spec written back as the command line that builds it, under
``accelerate launch``.

Why a command line and not a pickled spec: ``accelerate launch -m vaccine align ...`` is exactly what a
user runs by hand (README: Many GPUs), with DDP/FSDP, one norm over all ranks and checkpoints that resume;
the grid reuses that tested path instead of growing a second one. The flags come from the spec's fields
(the same ones ``add_flags`` generates), so a setting added to a spec is launched with no change here.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from dataclasses import MISSING
from typing import Any

from vaccine.errors import ConfigError, VaccineError
from vaccine.settings import cli_fields, flag_name


def _default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default_factory is not MISSING else field.default


def _flag(field: dataclasses.Field) -> str:
    """The field's longest spelling: launchers read short ones such as ``--p`` as their own flags."""
    return max(
        (field.metadata.get("flag", flag_name(field.name)), *field.metadata.get("aliases", ())), key=len
    )


def _words(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list | tuple) else [str(value)]


def stage_flags(spec: Any) -> list[str]:
    """The flags that rebuild ``spec`` (``vaccine <stage> FLAGS``): every field that differs from its
    default. A difference that no flag can express (a field kept off the command line) is refused."""
    flags: list[str] = []
    shown = {field.name for field in cli_fields(type(spec))}
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        if not field.init or value == _default(field):
            continue
        if field.name not in shown:
            raise ConfigError(
                f"{field.name}: not a flag of this stage, so it cannot be launched; got {value!r}"
            )
        flag = _flag(field)
        if isinstance(value, bool):
            if not value:
                raise ConfigError(f"{flag}: a switch that is on by default cannot be turned off by a flag")
            flags.append(flag)
        elif isinstance(value, dict):
            flags += [word for key, item in value.items() for word in (flag, f"{key}={item}")]
        elif isinstance(value, list | tuple):
            flags += [word for item in value for word in (flag, *_words(item))]
        elif value is not None:
            flags += [flag, str(value)]
    return flags


def _free_port() -> int:
    """A port for the launch's rendezvous: several launches share a machine, so 29500 for all would clash."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launcher_args(processes: int) -> list[str]:
    """``accelerate launch``'s own flags: one process per GPU of this machine (the GPUs the scheduler gave
    the task, in ``CUDA_VISIBLE_DEVICES``), DDP, and a free rendezvous port."""
    return ["--num_machines", "1", "--num_processes", str(processes), "--multi_gpu",
            "--main_process_port", str(_free_port())]  # fmt: skip


def launch_command(stage: str, spec: Any, processes: int) -> list[str]:
    launcher = [sys.executable, "-m", "accelerate.commands.launch", *launcher_args(processes)]
    return [*launcher, "-m", "vaccine", stage, *stage_flags(spec)]


def launch_stage(stage: str, spec: Any, processes: int) -> None:
    """Run ``vaccine <stage>`` for ``spec`` under ``accelerate launch`` on ``processes`` GPUs of this
    machine (the ones the scheduler gave this task: ``CUDA_VISIBLE_DEVICES``). A killed launch resumes
    from its checkpoints the next time."""
    done = subprocess.run(launch_command(stage, spec, processes), check=False)
    if done.returncode != 0:
        raise VaccineError(
            f"accelerate launch of `vaccine {stage}` into {spec.out} on {processes} GPUs failed "
            f"(exit code {done.returncode}); its output above says why"
        )
