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

/// The rows of the README's state table (between its `state-table` markers), as cells.
fn readme_state_table() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let start = readme.find("<!-- state-table: begin -->").expect("the README has a state table");
    let end = readme.find("<!-- state-table: end -->").expect("the state table ends");
    readme[start..end]
        .lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| line.trim_matches('|').split('|').map(|cell| cell.trim().to_owned()).collect())
        .collect()
}

#[test]
fn the_readme_state_table_is_the_one_in_the_code_and_matches_every_transition() {
    use tenantd::tenancy::{TenantState, Transition};
    // The same text as the table in src/tenancy/state.rs's documentation.
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/tenancy/state.rs")).expect("state.rs");
    let documented: Vec<&str> =
        source.lines().filter_map(|line| line.strip_prefix("//! ")).filter(|line| line.starts_with('|')).collect();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let start = readme.find("<!-- state-table: begin -->").expect("begin");
    let end = readme.find("<!-- state-table: end -->").expect("end");
    let in_readme: Vec<&str> = readme[start..end].lines().filter(|line| line.starts_with('|')).collect();
    assert_eq!(in_readme, documented, "the README's table is the code's");

    let rows = readme_state_table();
    let transitions = [
        ("Activate", Transition::Activate),
        ("Suspend", Transition::Suspend),
        ("Resume", Transition::Resume),
        ("Delete", Transition::Delete),
        ("StartPurge", Transition::StartPurge),
        ("FinishPurge", Transition::FinishPurge),
        ("Restore", Transition::Restore),
    ];
    let header = &rows[0];
    assert_eq!(header[1..].to_vec(), transitions.iter().map(|(name, _)| name.to_string()).collect::<Vec<_>>());
    // Footnote marks to the reasons they stand for.
    let reasons = [
        ('¹', "TENANT_PROVISIONING"),
        ('²', "TENANT_NOT_DELETED"),
        ('³', "TENANT_ALREADY_EXISTS"),
        ('⁴', "TENANT_SUSPENDED"),
        ('⁵', "TENANT_DELETED"),
        ('⁶', "TENANT_PURGING"),
        ('⁷', "TENANT_PURGED"),
    ];
    let mut checked = 0;
    for row in &rows[2..] {
        let from = TenantState::parse(&row[0].to_lowercase()).expect("a state");
        for ((name, transition), cell) in transitions.iter().zip(&row[1..]) {
            let expected = match from.after(*transition) {
                Ok(state) if state == from => "–".to_owned(),
                Ok(state) => state.as_str().to_uppercase(),
                Err(reason) => {
                    let mark = reasons.iter().find(|(_, text)| *text == reason.as_str()).expect("a footnote").0;
                    format!("refused{mark}")
                }
            };
            assert_eq!(cell, &expected, "{from:?} after {name}");
            checked += 1;
        }
    }
    assert_eq!(checked, TenantState::ALL.len() * transitions.len(), "every cell");
}
