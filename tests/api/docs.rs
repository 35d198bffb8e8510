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

/// The reasons the README's error table lists in the row of `code` (backticked names).
fn readme_reasons_by_code() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let table = readme.split("\n## Errors\n").nth(1).expect("an Errors section").split("\n## ").next().unwrap_or("");
    table
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|row| row.split_once(" | "))
        .filter(|(code, _)| code.chars().all(|character| character.is_ascii_uppercase() || character == '_'))
        .map(|(code, cell)| {
            let names = cell.split('`').skip(1).step_by(2).map(str::to_owned);
            // Settings (`TENANTD_*`) are named in the table too; they are not reasons.
            let reasons = names.filter(|name| !name.starts_with("TENANTD_"));
            (code.to_owned(), reasons.filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_')).collect())
        })
        .collect()
}

#[test]
fn the_readme_error_table_lists_every_reason_under_its_code_and_nothing_else() {
    use tenantd::error::Reason;
    let table = readme_reasons_by_code();
    assert!(table.len() >= 9, "control: the table has a row per code: {table:?}");
    let listed = |reason: Reason| {
        table
            .iter()
            .filter(move |(_, names)| names.iter().any(|name| name == reason.as_str()))
            .map(|(code, _)| code.clone())
    };
    for reason in Reason::ALL {
        // `Code::InvalidArgument` is INVALID_ARGUMENT in the table.
        let camel = format!("{:?}", reason.code());
        let mut code = String::new();
        for character in camel.chars() {
            if character.is_uppercase() && !code.is_empty() {
                code.push('_');
            }
            code.push(character.to_ascii_uppercase());
        }
        let rows: Vec<String> = listed(*reason).collect();
        assert_eq!(rows, vec![code], "{} is documented once, under its code", reason.as_str());
    }
    let known: Vec<&str> = Reason::ALL.iter().map(|reason| reason.as_str()).collect();
    for (code, names) in &table {
        for name in names {
            assert!(known.contains(&name.as_str()), "the README lists {name} under {code}, which is not a reason");
        }
    }
}
