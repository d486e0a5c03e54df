//! The README's Rust examples are what users copy: each is compiled and run here in a crate of
//! its own outside the workspace, with the dependencies the README lists.

const README: &str = include_str!("../../README.md");

/// The README's ```rust blocks, in order.
fn rust_blocks() -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in README.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```rust") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().expect("in a block")),
            (Some(text), l) => {
                text.push_str(l);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_readme_fixture_example_is_the_suite_s_examples_file() {
    let blocks = rust_blocks();
    assert_eq!(blocks.len(), 2, "the README has two Rust examples");
    assert_eq!(blocks[0], include_str!("examples.rs"));
}

#[test]
fn the_readme_examples_compile_and_pass_in_a_crate_of_their_own() {
    // The dependencies the README names, nothing else.
    let dependencies = r#"mkh = { path = "{root}/harness" }
mkh-fixtures = { path = "{root}/fixtures" }
rstest = "0.26"
tokio = { version = "1", features = ["macros", "rt"] }
"#;
    let tests: Vec<(String, String)> = rust_blocks()
        .into_iter()
        .enumerate()
        .map(|(i, block)| (format!("readme_{i}.rs"), block))
        .collect();
    let (passed, text) =
        mkh_tests::test_outside_crate(dependencies, &tests, &["--", "--test-threads=1"]);
    assert!(passed, "{text}");
    // Three fixture tests and one plain one ran and passed.
    assert!(text.contains("3 passed"), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}
