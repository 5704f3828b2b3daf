//! The shared library's soname: `libransomeye_producer.so.0`, the ABI
//! version the packages install (`libransomeye-producer`); a change that
//! breaks `include/ransomeye_producer.h`'s ABI raises it.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libransomeye_producer.so.0");
}
