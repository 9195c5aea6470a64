"""Where untrusted balancer programs run: the harness-side client (`harness`), the warm forking
process (`zygote`), the per-candidate worker (`worker`) and the reply format between them (`wire`)."""
