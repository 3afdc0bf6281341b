"""What a results file says about the machine it was measured on."""

from __future__ import annotations

import torch

from auras.bench.report import machine_info


def test_the_machine_record_names_the_cuda_devices_or_says_there_are_none(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert machine_info()["gpu"] is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"NVIDIA H200 #{i}")
    info = machine_info()
    assert info["gpu"] == ["NVIDIA H200 #0", "NVIDIA H200 #1"]
    assert info["cpu_count"] >= 1 and info["memory_gb"] > 0
