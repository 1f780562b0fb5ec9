//! Checking a text template (minijinja) when it is loaded, not when an alert
//! first renders it: rule annotations and action templates alike.
//!
//! A template is refused when it names a variable its context never has, or
//! when rendering it against sample contexts fails (an unknown filter or test,
//! a filter given the wrong arguments). A filter inside a branch that no
//! sample takes is only found when that branch renders.

use std::collections::BTreeSet;

use minijinja::Environment;
use serde_json::Value;

/// Checks template `name` of `env`: every variable it reads from its context
/// is one of `known` (or a global of the environment), and it renders against
/// each of `samples`. The error says what is wrong, without the template's name.
pub fn check(
    env: &Environment<'_>,
    name: &str,
    known: &BTreeSet<String>,
    samples: &[Value],
) -> Result<(), String> {
    let template = env.get_template(name).map_err(|e| e.to_string())?;
    let globals: BTreeSet<&str> = env.globals().map(|(g, _)| g).collect();
    let mut unknown: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !known.contains(v) && !globals.contains(v.as_str()))
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(format!(
            "unknown variable{} {} (known: {})",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", "),
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    for sample in samples {
        template.render(sample).map_err(|e| {
            // minijinja's Display adds the template's name and line; keep
            // the kind and detail, then say where
            let line = e.line().map(|l| format!(" (line {l})")).unwrap_or_default();
            match e.detail() {
                Some(detail) => format!("{}: {detail}{line}", e.kind()),
                None => format!("{}{line}", e.kind()),
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str) -> Environment<'static> {
        let mut env = Environment::new();
        env.add_template_owned("t", text.to_owned())
            .expect("compiles");
        env
    }

    fn known(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn an_unknown_filter_is_refused_with_its_name() {
        let e = check(
            &env("{{ model_id | shout }}"),
            "t",
            &known(&["model_id"]),
            &[serde_json::json!({ "model_id": "m" })],
        )
        .expect_err("refused");
        assert!(e.contains("unknown filter") && e.contains("shout"), "{e}");
    }

    #[test]
    fn an_unknown_variable_is_refused_and_loop_variables_are_not() {
        let e =
            check(&env("{{ modle_id }}"), "t", &known(&["model_id"]), &[]).expect_err("refused");
        assert_eq!(e, "unknown variable modle_id (known: model_id)");
        check(
            &env("{% for a in alerts %}{{ a.rule | upper }}{{ loop.index }}{% endfor %}{{ range(2) | length }}"),
            "t",
            &known(&["alerts"]),
            &[serde_json::json!({ "alerts": [{ "rule": "r" }] })],
        )
        .expect("loop variables and globals are declared");
    }
}
