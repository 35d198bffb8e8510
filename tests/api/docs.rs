//! The docs stay true: the README documents every setting the binary accepts.

use clap::CommandFactory;
use tenantd::cli::Cli;

/// Every environment variable any `tenantd` subcommand reads.
fn accepted_variables() -> Vec<String> {
    fn walk(command: &clap::Command, found: &mut Vec<String>) {
        for argument in command.get_arguments() {
            if let Some(name) = argument.get_env().and_then(|name| name.to_str()) {
                found.push(name.to_owned());
            }
        }
        for subcommand in command.get_subcommands() {
            walk(subcommand, found);
        }
    }
    let mut found = Vec::new();
    walk(&Cli::command(), &mut found);
    found.sort();
    found.dedup();
    found
}

#[test]
fn the_readme_documents_every_environment_variable() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let cli = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md")).expect("docs/cli.md");
    let variables = accepted_variables();
    assert!(variables.contains(&"TENANTD_DATABASE_URL".to_owned()), "control: {variables:?}");
    let missing: Vec<_> = variables
        .iter()
        .filter(|name| !readme.contains(&format!("`{name}`")) && !cli.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "undocumented settings: {missing:?}");
}
