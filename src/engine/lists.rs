//! Lists: the values of list files (one a line, `#` comments), staged and
//! checked against a new ruleset before a reload changes anything, and
//! the engine's edits of a list (a whole list replaced, a list edit
//! event's error). The values themselves are kept by history; this file
//! holds what the engine adds: reading files, all-or-nothing staging and
//! the errors it gives. It names only `reload.rs`, for [`ReloadError`].

use super::reload::ReloadError;
use crate::contract::{ContractError, ErrorCode, Event};
use crate::history::{History, ListError, StagedList};
use crate::rules::CompiledRules;

/// The value a line of a list file holds, if any: the text before any `#`,
/// trimmed. Blank lines and comments hold none.
pub fn list_file_value(line: &str) -> Option<&str> {
    let value = line.split('#').next().unwrap_or("").trim();
    (!value.is_empty()).then_some(value)
}

/// A value of a list file, with the line it is on (from 1), so that an
/// error names the line; blank lines and comments are not kept, so what a
/// list file costs in memory is its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFileValue {
    pub line: usize,
    pub value: String,
}

/// The values of a list file's `lines` (the i-th is line i + 1).
pub fn list_file_values<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<ListFileValue> {
    lines
        .into_iter()
        .enumerate()
        .filter_map(|(i, line)| {
            list_file_value(line).map(|value| ListFileValue {
                line: i + 1,
                value: value.to_string(),
            })
        })
        .collect()
}

/// Every list file of a reload, parsed and checked against `rules` (the
/// new ruleset), changing nothing: one staged list per name.
pub(super) fn stage_lists(
    rules: &CompiledRules,
    lists: &[(String, Vec<ListFileValue>)],
) -> Result<Vec<StagedList>, ReloadError> {
    let mut staged: Vec<StagedList> = Vec::new();
    for (name, values) in lists {
        let i = match staged.iter().position(|l| l.name() == name) {
            Some(i) => i,
            None => {
                let list = StagedList::new(rules, name).map_err(|_| undeclared(rules, name))?;
                staged.push(list);
                staged.len() - 1
            }
        };
        for ListFileValue { line, value } in values {
            staged[i]
                .push(rules, value)
                .map_err(|error| ReloadError::ListValue {
                    list: name.clone(),
                    line: *line,
                    value: value
                        .chars()
                        .take(crate::contract::LIST_VALUE_CHARS_MAX)
                        .collect(),
                    error,
                })?;
        }
    }
    Ok(staged)
}

fn undeclared(rules: &CompiledRules, name: &str) -> ReloadError {
    ReloadError::UndeclaredList {
        list: name.to_string(),
        declared: rules.lists.iter().map(|d| d.name.clone()).collect(),
    }
}

/// Refuses a reload that would carry a list's values over to a ruleset
/// declaring it with another type: kept as keys of the old type, they
/// would match nothing, or the wrong values, as the new one.
pub(super) fn check_carried_lists(
    history: &History,
    old: &CompiledRules,
    new: &CompiledRules,
    staged: &[StagedList],
) -> Result<(), ReloadError> {
    use crate::history::list_ty;
    for name in history.list_names() {
        let replaced = staged.iter().any(|l| l.name() == name);
        let declared = new.lists.iter().any(|d| d.name == name);
        if replaced || !declared {
            continue;
        }
        let (was, now) = (list_ty(old, name), list_ty(new, name));
        let values = history.list_len(name);
        if was != now && values > 0 {
            return Err(ReloadError::ListTypeChanged {
                list: name.to_string(),
                was: was.name(),
                now: now.name(),
                values,
            });
        }
    }
    Ok(())
}

/// Replaces the whole contents of list `name` in `history` with `values`,
/// each parsed as the type `rules` declares for it. Every value is checked
/// first: on an error nothing changes.
pub(super) fn replace_list<'v>(
    history: &mut History,
    rules: &CompiledRules,
    name: &str,
    values: impl IntoIterator<Item = &'v str>,
) -> Result<(), ListError> {
    let mut staged = StagedList::new(rules, name)?;
    for v in values {
        staged.push(rules, v)?;
    }
    history.replace_list(staged);
    Ok(())
}

/// The error a list edit event gets for a value its list cannot keep: it
/// names the field at fault.
pub(super) fn list_error(e: ListError, ev: &Event) -> ContractError {
    let field = match e {
        ListError::Full { .. } | ListError::Undeclared { .. } => "list",
        ListError::WrongType { .. } => "value",
    };
    let mut err = ContractError::new(ErrorCode::InvalidValue, Some(field), e.to_string());
    err.id.clone_from(&ev.id);
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::engine::tests::{compiled, event, run, swap};
    use crate::rules::Outcome;

    /// A list file with a bad value, or naming an undeclared list, or a
    /// list whose type changed and that no file gives: the reload is
    /// refused and nothing changes, not the rules, not history, not lists.
    #[test]
    fn a_failed_list_validation_changes_nothing() {
        let old = compiled("default.rules", crate::rules::DEFAULT_RULES);
        let new = compiled(
            "reordered.rules",
            &crate::rules::DEFAULT_RULES.replace(
                "\nrule account_lock",
                "\nrule first_probe deny when count(lock on account within 2h) >= 9\nrule account_lock",
            ),
        );
        let mut e = Engine::new(old.clone());
        let (blocked, other) = ("356938035643809", "490154203237518");
        e.replace_list("blocked_imei", [blocked]).expect("an imei");
        e.list_add("adhoc", "x").expect("a token list");
        run(&mut e, &swap("s0", "+447700900701", "2026-03-01T10:00:00Z"));
        let with_imei = |id: &str, imei: &str| {
            event(&format!(
                r#"{{"id":"{id}","kind":"sim_swap","at":"2026-03-01T11:00:00Z","msisdn":"+447700900702","account":"A2","iccid":"8944110000000000008","imei":"{imei}"}}"#
            ))
        };
        let at = |ev: &Event| ev.at.expect("at");
        let (b, o) = (with_imei("b", blocked), with_imei("o", other));
        assert_eq!(e.evaluate(&b, at(&b)).0, Outcome::Deny);
        assert_eq!(e.evaluate(&o, at(&o)).0, Outcome::Allow);
        let bytes = e.history().approx_bytes();
        let lines = |ls: &[&str]| list_file_values(ls.iter().copied());
        let file = lines(&["# blocked devices", other, "", "35693803564380x  # typo"]);
        let refused = e.reload(new.clone(), &[("blocked_imei".into(), file)]);
        assert!(
            matches!(&refused, Err(ReloadError::ListValue { list, line: 4, value, error: ListError::WrongType { .. } })
                if list == "blocked_imei" && value == "35693803564380x"),
            "{refused:?}"
        );
        assert!(refused.unwrap_err().to_string().contains("line 4"));
        let undeclared = e.reload(new.clone(), &[("nope".into(), lines(&["x"]))]);
        assert!(
            matches!(&undeclared, Err(ReloadError::UndeclaredList { list, declared }) if list == "nope" && declared == &["blocked_imei"]),
            "{undeclared:?}"
        );
        let retyped = compiled(
            "retyped.rules",
            &crate::rules::DEFAULT_RULES
                .replace("list blocked_imei: imei", "list blocked_imei: token")
                .replace("when imei in list", "when agent in list"),
        );
        let changed = e.load_rules(retyped.clone());
        assert!(
            matches!(&changed, Err(ReloadError::ListTypeChanged { list, values: 1, .. }) if list == "blocked_imei"),
            "{changed:?}"
        );
        assert!(e.replace_list("blocked_imei", [other, "bad"]).is_err());
        assert!(matches!(
            e.replace_list("nope", [other]),
            Err(ListError::Undeclared { .. })
        ));
        // Nothing changed.
        assert_eq!(
            (e.current_index(), e.current().hash.as_str()),
            (0, old.hash.as_str())
        );
        assert_eq!(e.history().approx_bytes(), bytes);
        assert_eq!(e.evaluate(&b, at(&b)).0, Outcome::Deny);
        assert_eq!(e.evaluate(&o, at(&o)).0, Outcome::Allow);
        // The same reload with a good file applies all of it: the list's
        // whole contents are the file's, the undeclared list goes.
        let file = lines(&["# blocked devices", other, ""]);
        let done = e
            .reload(new.clone(), &[("blocked_imei".into(), file)])
            .expect("reload");
        assert_eq!(
            (done.ruleset, done.lists_replaced, done.lists_dropped),
            (1, 1, 1)
        );
        assert_eq!(e.evaluate(&b, at(&b)).0, Outcome::Allow);
        assert_eq!(e.evaluate(&o, at(&o)).0, Outcome::Deny);
        // A type change with the list given by a file is fine.
        let file = lines(&["any-token"]);
        let done = e
            .reload(retyped, &[("blocked_imei".into(), file)])
            .expect("retyped");
        assert_eq!(done.ruleset, 2);
        assert_eq!(e.evaluate(&o, at(&o)).0, Outcome::Allow);
    }

    #[test]
    fn list_file_values_skip_blanks_and_comments() {
        assert_eq!(
            list_file_value("  356938035643809  # a phone"),
            Some("356938035643809")
        );
        assert_eq!(list_file_value("# only a comment"), None);
        assert_eq!(list_file_value("   "), None);
    }
}
