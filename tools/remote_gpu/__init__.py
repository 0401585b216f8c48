"""Moving models and data to a GPU machine that takes only small transfers (not installed, not
part of the benchmarks): ``python -m tools.remote_gpu.device_pack``."""
