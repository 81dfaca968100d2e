//! With the `duckdb` feature (and not `duckdb-bundled`): the binary and tests find the prebuilt
//! libduckdb.so where it was linked from (an rpath to DUCKDB_LIB_DIR, .deps/duckdb by default).
fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    let linked = std::env::var_os("CARGO_FEATURE_DUCKDB").is_some()
        && std::env::var_os("CARGO_FEATURE_DUCKDB_BUNDLED").is_none();
    if let (true, Some(dir)) = (linked, std::env::var_os("DUCKDB_LIB_DIR")) {
        let dir = std::path::PathBuf::from(dir);
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", dir.display());
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", dir.display());
    }
}
