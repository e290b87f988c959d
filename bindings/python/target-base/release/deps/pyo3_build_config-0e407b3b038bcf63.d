/work/wt-python/bindings/python/target-base/release/deps/pyo3_build_config-0e407b3b038bcf63.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-build-config-0.25.1/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-build-config-0.25.1/src/errors.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-build-config-0.25.1/src/impl_.rs /work/wt-python/bindings/python/target-base/release/build/pyo3-build-config-5e1080c7d025b12c/out/pyo3-build-config-file.txt /work/wt-python/bindings/python/target-base/release/build/pyo3-build-config-5e1080c7d025b12c/out/pyo3-build-config.txt

/work/wt-python/bindings/python/target-base/release/deps/libpyo3_build_config-0e407b3b038bcf63.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-build-config-0.25.1/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-build-config-0.25.1/src/errors.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-build-config-0.25.1/src/impl_.rs /work/wt-python/bindings/python/target-base/release/build/pyo3-build-config-5e1080c7d025b12c/out/pyo3-build-config-file.txt /work/wt-python/bindings/python/target-base/release/build/pyo3-build-config-5e1080c7d025b12c/out/pyo3-build-config.txt

/work/wt-python/bindings/python/target-base/release/deps/libpyo3_build_config-0e407b3b038bcf63.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-build-config-0.25.1/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-build-config-0.25.1/src/errors.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-build-config-0.25.1/src/impl_.rs /work/wt-python/bindings/python/target-base/release/build/pyo3-build-config-5e1080c7d025b12c/out/pyo3-build-config-file.txt /work/wt-python/bindings/python/target-base/release/build/pyo3-build-config-5e1080c7d025b12c/out/pyo3-build-config.txt

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-build-config-0.25.1/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-build-config-0.25.1/src/errors.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pyo3-build-config-0.25.1/src/impl_.rs:
/work/wt-python/bindings/python/target-base/release/build/pyo3-build-config-5e1080c7d025b12c/out/pyo3-build-config-file.txt:
/work/wt-python/bindings/python/target-base/release/build/pyo3-build-config-5e1080c7d025b12c/out/pyo3-build-config.txt:

# env-dep:CARGO_PKG_VERSION=0.25.1
# env-dep:OUT_DIR=/work/wt-python/bindings/python/target-base/release/build/pyo3-build-config-5e1080c7d025b12c/out
