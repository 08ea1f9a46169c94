// sqlx::migrate! embeds each file of migrations/auth/ when it compiles, but rustc tracks only
// the files it read: a migration added later would not reach the binary until something else
// changed. Watching the folder rebuilds on any change in it.
fn main() {
    println!("cargo:rerun-if-changed=../migrations/auth");
}
