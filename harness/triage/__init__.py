"""Where a scenario crashed or hung: PE unwind data, stack walking, symbols, signatures.

Guests report raw stacks (``harness.kernel.stacks.StackReport``); this package
names them: ``pe`` (images and x64 unwind data), ``unwind`` (a stack walker over
any memory reader), ``symbols`` (function and source line from the build's debug
copies), ``analyse`` (report -> named frames), ``signature`` and ``model``.
"""
