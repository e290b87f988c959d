/work/wt-python/bindings/python/target-base/release/deps/pyo3_macros-435f0e91b31670d9.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-macros-0.25.1/src/lib.rs

/work/wt-python/bindings/python/target-base/release/deps/libpyo3_macros-435f0e91b31670d9.so: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-macros-0.25.1/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-macros-0.25.1/src/lib.rs:

# env-dep:CARGO_PKG_VERSION=0.25.1
