//! Card-name completion for bash, appended to clap_complete's script.
//!
//! clap knows a CARD argument only as a string; the cards that exist are the
//! entries of `ROOT/sys/class/mic`, ROOT being the `--root` on the command
//! line, else `$MIC_ROOT`, else `/`. The hook wraps the generated completion
//! function: it lets clap_complete answer first, then, when the word being
//! completed is a CARD positional of the (sub)command on the line, adds the
//! card names. Which positions are CARD arguments, which options take a value
//! and which words are subcommands all come from the clap definition, so the
//! hook follows the CLI as it changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use clap::{Arg, Command};

/// The option every tool takes for its root directory.
const ROOT_OPTION: &str = "--root";

/// A CARD positional: the command path it belongs to (subcommand names
/// after the binary, space-separated with a leading space, "" for the binary
/// itself), its index among the positionals, and whether it takes several
/// values (then every later position is a card too).
#[derive(Debug, Clone, PartialEq, Eq)]
struct CardPositional {
    path: String,
    index: usize,
    multiple: bool,
}

/// Whether `arg` names cards: a positional called `card`/`cards`, or whose
/// value name starts with CARD.
fn is_card_arg(arg: &Arg) -> bool {
    let id = arg.get_id().as_str().to_ascii_lowercase();
    let by_value_name = arg
        .get_value_names()
        .is_some_and(|names| names.iter().any(|n| n.to_ascii_uppercase().starts_with("CARD")));
    matches!(id.as_str(), "card" | "cards") || by_value_name
}

#[derive(Debug, Default)]
struct Scan {
    /// Every subcommand path (as in [`CardPositional::path`]).
    paths: Vec<String>,
    /// Per command path, every option spelling that takes a value there
    /// (`--root`, `-t`).
    value_options: BTreeMap<String, BTreeSet<String>>,
    cards: Vec<CardPositional>,
}

fn scan(cmd: &Command, path: &str, out: &mut Scan) {
    let options = out.value_options.entry(path.to_owned()).or_default();
    for arg in cmd.get_arguments() {
        if arg.is_positional() || !arg.get_action().takes_values() {
            continue;
        }
        for long in arg.get_long_and_visible_aliases().into_iter().flatten() {
            options.insert(format!("--{long}"));
        }
        for short in arg.get_short_and_visible_aliases().into_iter().flatten() {
            options.insert(format!("-{short}"));
        }
    }
    for (index, arg) in cmd.get_positionals().enumerate() {
        if is_card_arg(arg) {
            let multiple = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
            out.cards.push(CardPositional {
                path: path.to_owned(),
                index,
                multiple,
            });
            break;
        }
    }
    for sub in cmd.get_subcommands() {
        let sub_path = format!("{path} {}", sub.get_name());
        out.paths.push(sub_path.clone());
        scan(sub, &sub_path, out);
    }
}

/// The bash lines to append to clap_complete's script for `cmd`, or nothing
/// if it has no CARD argument.
#[must_use]
pub fn hook(cmd: &Command) -> String {
    let mut cmd = cmd.clone();
    cmd.build();
    let mut found = Scan::default();
    scan(&cmd, "", &mut found);
    if found.cards.is_empty() {
        return String::new();
    }
    let bin = cmd.get_name();
    // clap_complete's function name for the binary.
    let generated = format!("_{}", bin.replace('-', "__"));
    let cards_fn = format!("{generated}__mic_cards");
    let wrapper = format!("{generated}__with_mic_cards");
    let mut value_options = String::new();
    for (path, options) in found.value_options.iter().filter(|(_, o)| !o.is_empty()) {
        let options = options.iter().map(String::as_str).collect::<Vec<_>>().join(" | ");
        write!(
            value_options,
            "\n                    {path:?}) case \"${{w}}\" in {options}) skip=1 ;; esac ;;"
        )
        .unwrap();
    }
    let mut paths = String::new();
    for p in &found.paths {
        write!(
            paths,
            "\n                    {p:?}) path=\"${{path}} ${{w}}\"; npos=0 ;;"
        )
        .unwrap();
    }
    let mut rules = String::new();
    for c in &found.cards {
        let test = if c.multiple { "-ge" } else { "-eq" };
        write!(
            rules,
            "\n        {:?}) [[ ${{npos}} {test} {} ]] || return 0 ;;",
            c.path, c.index
        )
        .unwrap();
    }
    format!(
        r#"
# Card names for CARD arguments (appended by `cargo xtask gen`): the entries
# of ROOT/sys/class/mic, ROOT being {ROOT_OPTION} on the command line, else
# $MIC_ROOT, else /.
{cards_fn}() {{
    local root="${{MIC_ROOT:-/}}" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            {ROOT_OPTION})
                root="${{COMP_WORDS[i + 1]}}"
                [[ ${{root}} == = ]] && root="${{COMP_WORDS[i + 2]}}"
                ;;
            {ROOT_OPTION}=*) root="${{COMP_WORDS[i]#{ROOT_OPTION}=}}" ;;
        esac
    done
    root="${{root/#\~/$HOME}}"
    compgen -W "$(ls "${{root%/}}/sys/class/mic" 2>/dev/null)" -- "${{COMP_WORDS[COMP_CWORD]}}"
}}

{wrapper}() {{
    {generated} "$@"
    local cur="${{COMP_WORDS[COMP_CWORD]}}" path="" npos=0 skip=0 i w
    [[ ${{cur}} == -* ]] && return 0
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        if [[ ${{skip}} -eq 1 ]]; then
            [[ ${{w}} == = ]] || skip=0
            continue
        fi
        case "${{w}}" in
            -*)
                case "${{path}}" in{value_options}
                esac
                ;;
            *)
                case "${{path}} ${{w}}" in{paths}
                    *) npos=$((npos + 1)) ;;
                esac
                ;;
        esac
    done
    [[ ${{skip}} -eq 1 ]] && return 0
    case "${{path}}" in{rules}
        *) return 0 ;;
    esac
    local IFS=$'\n'
    COMPREPLY+=($({cards_fn}))
}}

if [[ "${{BASH_VERSINFO[0]}}" -eq 4 && "${{BASH_VERSINFO[1]}}" -ge 4 || "${{BASH_VERSINFO[0]}}" -gt 4 ]]; then
    complete -F {wrapper} -o nosort -o bashdefault -o default {bin}
else
    complete -F {wrapper} -o bashdefault -o default {bin}
fi
"#
    )
}

#[cfg(test)]
mod tests {
    use clap::{Arg, ArgAction, Command};

    use super::*;

    fn tool() -> Command {
        Command::new("tool")
            .arg(Arg::new("root").long("root").global(true))
            .subcommand(Command::new("status").arg(Arg::new("cards").num_args(0..)))
            .subcommand(
                Command::new("inject")
                    .arg(Arg::new("card").required(true))
                    .arg(Arg::new("fault").num_args(1..)),
            )
            .subcommand(
                Command::new("log")
                    .arg(Arg::new("lines").short('n').long("lines"))
                    .arg(Arg::new("follow").short('f').action(ArgAction::SetTrue))
                    .arg(Arg::new("which").value_name("CARD")),
            )
    }

    #[test]
    fn finds_card_positionals_and_value_options() {
        let mut cmd = tool();
        cmd.build();
        let mut s = Scan::default();
        scan(&cmd, "", &mut s);
        let cards: Vec<_> = s
            .cards
            .iter()
            .map(|c| (c.path.as_str(), c.index, c.multiple))
            .collect();
        assert_eq!(
            cards,
            [(" status", 0, true), (" inject", 0, false), (" log", 0, false)]
        );
        // --root is global: every command takes it.
        let non_help = s.value_options.iter().filter(|(p, _)| !p.starts_with(" help"));
        assert!(non_help.clone().count() == 4 && non_help.into_iter().all(|(_, o)| o.contains("--root")));
        assert!(s.value_options[" log"].contains("-n") && !s.value_options[" log"].contains("-f"));
        assert!(!s.value_options[" status"].contains("-n"));
        assert!(s.paths.contains(&" help".to_owned()));
    }

    #[test]
    fn no_card_argument_no_hook() {
        assert!(hook(&Command::new("plain").arg(Arg::new("x").long("x"))).is_empty());
        let h = hook(&tool());
        assert!(h.contains("complete -F _tool__with_mic_cards"), "{h}");
        assert!(h.contains(r#"" inject") [[ ${npos} -eq 0 ]]"#), "{h}");
    }

    /// Runs the generated bash completion for a command line and returns
    /// the candidates (skipped when bash is not installed).
    fn complete(script: &str, root: &std::path::Path, line: &[&str]) -> Option<Vec<String>> {
        let words = line
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let program = format!(
            "{script}\nCOMP_WORDS=({words}); COMP_CWORD={}; \
             f=$(complete -p tool | sed 's/.*-F \\([^ ]*\\).*/\\1/'); \
             $f tool \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            line.len() - 1
        );
        let out = std::process::Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &program])
            .env("MIC_ROOT", root)
            .output()
            .ok()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .filter(|l| !l.is_empty())
                .collect(),
        )
    }

    #[test]
    fn bash_completes_card_names_where_cards_go() {
        let root = tempfile::tempdir().unwrap();
        for card in ["mic0", "mic1", "mic10"] {
            std::fs::create_dir_all(root.path().join("sys/class/mic").join(card)).unwrap();
        }
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(other.path().join("sys/class/mic/mic7")).unwrap();
        let mut script = Vec::new();
        let mut cmd = tool();
        clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "tool", &mut script);
        let script = String::from_utf8(script).unwrap() + &hook(&tool());
        let cards = |line: &[&str]| -> Option<Vec<String>> {
            complete(&script, root.path(), line)
                .map(|c| c.into_iter().filter(|w| w.starts_with("mic")).collect())
        };
        let Some(all) = cards(&["tool", "status", ""]) else {
            return;
        };
        assert_eq!(all, ["mic0", "mic1", "mic10"]);
        assert_eq!(
            cards(&["tool", "status", "mic0", "mic1"]).unwrap(),
            ["mic1", "mic10"]
        );
        assert_eq!(
            cards(&["tool", "inject", "mic"]).unwrap(),
            ["mic0", "mic1", "mic10"]
        );
        // Only the first positional of inject is a card.
        assert!(cards(&["tool", "inject", "mic0", ""]).unwrap().is_empty());
        // The value of an option is not a card; the word after it is.
        assert!(cards(&["tool", "log", "-n", ""]).unwrap().is_empty());
        assert_eq!(
            cards(&["tool", "log", "-n", "5", "mic1"]).unwrap(),
            ["mic1", "mic10"]
        );
        // --root on the line wins over MIC_ROOT, with or without `=`.
        let o = other.path().to_str().unwrap();
        assert_eq!(cards(&["tool", "--root", o, "status", ""]).unwrap(), ["mic7"]);
        assert_eq!(
            cards(&["tool", "--root", "=", o, "status", ""]).unwrap(),
            ["mic7"]
        );
        // Not at the top level, nor for an option.
        assert!(cards(&["tool", ""]).unwrap().is_empty());
        assert!(cards(&["tool", "status", "-"]).unwrap().is_empty());
    }
}
