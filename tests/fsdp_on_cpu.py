"""Run the vaccine CLI with accelerate's real FSDP2 path on CPU processes (gloo).

    accelerate launch --config_file CPU_FSDP.yaml tests/fsdp_on_cpu.py [--kill-at POINT STEP] vaccine-args...

accelerate builds FSDP only on GPUs: on CPUs its state says MULTI_CPU and the FSDP plugin is dropped. torch's
``fully_shard`` itself works on CPU, so this launcher lets accelerate keep the plugin it was given; from there
on it is accelerate's own code (``fsdp2_prepare_model``, sharded checkpoints) running our trainers, which is
what a GPU user of configs/accelerate/fsdp.yaml runs, minus NCCL. ``--kill-at`` SIGKILLs every
rank at a point, as tests/kill_at.py does for one process.
"""

from __future__ import annotations

import sys

from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType

_accelerator_state_init = AcceleratorState.__init__


def _keep_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP  # what accelerate does on GPUs, from here on
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = fsdp_plugin


if __name__ == "__main__":
    AcceleratorState.__init__ = _keep_fsdp_on_cpu
    argv = sys.argv[1:]
    if argv[:1] == ["--kill-at"]:
        from kill_at import arm  # tests/ is this script's folder, so it is on sys.path

        arm(argv[1], int(argv[2]))
        argv = argv[3:]
    from vaccine.cli import main

    sys.exit(main(argv))
