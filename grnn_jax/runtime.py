"""Process-level settings: the CPU's cores as JAX host devices, glibc's allocator, the float type.

Each must run before the first JAX computation where its docstring says so (JAX fixes
the number of host devices when its backends start).

Example:
  >>> from grnn_jax import runtime
  >>> runtime.available_cores() >= 1
  True
  >>> str(runtime.default_float())
  'float32'
"""

from grnn_jax._util.allocator import keep_freed_memory, keep_freed_memory_if_asked
from grnn_jax._util.cpu_devices import available_cores, population_host_devices, request_cpu_devices
from grnn_jax._util.dtypes import default_float

__all__ = [
    "available_cores",
    "default_float",
    "keep_freed_memory",
    "keep_freed_memory_if_asked",
    "population_host_devices",
    "request_cpu_devices",
]
