"""Where the benchmarks' GPU targets are asserted: keyed on the compute capability, so that an H200 (whose
name has no "H100" in it) or a newer GPU checks them too, and an older GPU only records its figures."""

from benchmarks.gpu_targets import gpu_target_applies


def test_gpu_targets_apply_from_hopper_on():
    assert gpu_target_applies((9, 0))  # H100 and H200
    assert gpu_target_applies((10, 0)) and gpu_target_applies((12, 1))  # Blackwell
    assert not gpu_target_applies((8, 0)) and not gpu_target_applies((8, 9))  # A100, L4
