/work/wt-python/bindings/python/target-base/release/deps/_native.d: src/lib.rs

/work/wt-python/bindings/python/target-base/release/deps/lib_native.so: src/lib.rs

src/lib.rs:
