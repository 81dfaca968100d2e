//! Links this crate's tests against the prebuilt libduckdb.so with an rpath, and says what to do
//! when the library is missing (the duckdb crate would only fail at link time).
fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_some() {
        return;
    }
    let Some(dir) = std::env::var_os("DUCKDB_LIB_DIR") else {
        panic!("DUCKDB_LIB_DIR is not set: run scripts/setup.sh, which unpacks DuckDB's library into .deps/duckdb");
    };
    let dir = std::path::PathBuf::from(dir);
    if !dir.join("libduckdb.so").exists() {
        panic!("{} has no libduckdb.so: run scripts/setup.sh, which puts DuckDB's library there", dir.display());
    }
    println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", dir.display());
}
