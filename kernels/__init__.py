"""Triton kernels of yolox_fast (installed as ``yolox_fast.kernels``).

One module per hot path: ``_<op>_kernel`` (the ``@triton.jit`` kernel) and ``launch_<op>()`` (grid
and arguments), entered from PyTorch through ``torch.library.triton_op`` + ``wrap_triton`` so that
``torch.compile`` can trace them. Kernels run on CUDA GPUs, and on the CPU under
``TRITON_INTERPRET=1`` (tests only). ``_launch`` holds what every launcher shares (the device guard,
the no-FMA option of bit-exact kernels); ``compile_specs`` compiles every kernel for sm_90 without a
GPU with the launchers' configurations and checks the generated code (tests/infrastructure/test_sm90_compile.py).
"""
