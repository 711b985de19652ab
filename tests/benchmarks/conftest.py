"""pytest-benchmark settings: the machine info names the frameworks and the GPU."""

from __future__ import annotations


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:
    from aebench.environment import installed_versions, nvidia_gpu_and_driver

    gpu, driver = nvidia_gpu_and_driver()
    machine_info["aebench"] = {"versions": installed_versions(), "gpu": gpu, "driver": driver}
