
use builtin;
use str;

set edit:completion:arg-completer[micctl] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'micctl'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'micctl'= {
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand status 'One row per card: state, shutdown status, family, stepping, IP address, time in state, POST code'
            cand info 'Every sysfs attribute of a card and the useful debugfs facts (POST code, SMPT, device page)'
            cand boot 'Boot cards with the micctrl defaults (linux, mic/uos.img, mic/micN.image)'
            cand shutdown 'Ask the card OS to shut down'
            cand reset 'Reset cards to offline'
            cand reboot 'Shut down, reset and boot again'
            cand wait 'Wait until cards reach a state'
            cand log 'The card kernel log, dmesg style'
            cand events 'mpssd''s events as they happen: supervision, devices, crashes, configuration reloads'
            cand crash 'mpssd''s crash forensics bundles (DIR/var/lib/mpssd/crash/micN-TIME/); mpssd need not run'
            cand console 'Attach to a card''s console (through mpssd): type into it, watch it, or script it'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'micctl;status'= {
            cand --duration 'With --watch: stop after this long'
            cand -t 'Give up (exit 6) if the driver has not answered within this long: for the whole status, or with --watch for each read [default: 10s]'
            cand --timeout 'Give up (exit 6) if the driver has not answered within this long: for the whole status, or with --watch for each read [default: 10s]'
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand -w 'Keep running and print every change as it happens (JSON Lines with --json)'
            cand --watch 'Keep running and print every change as it happens (JSON Lines with --json)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'micctl;info'= {
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'micctl;boot'= {
            cand --firmware 'Card OS image, relative to lib/firmware'
            cand --ramdisk 'Ramdisk, relative to lib/firmware [default: mic/micN.image]'
            cand --cmdline 'Kernel command line [default: the card''s own, or mpssd''s default with a static address]'
            cand --bootmode 'Boot mode'
            cand -t 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl''s rule)'
            cand --timeout 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl''s rule)'
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand -w 'Wait until the operation completed on every card'
            cand --wait 'Wait until the operation completed on every card'
            cand --strict 'Treat a card already in the requested state as a failure (exit 9)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'micctl;shutdown'= {
            cand -t 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl''s rule)'
            cand --timeout 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl''s rule)'
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand -w 'Wait until the operation completed on every card'
            cand --wait 'Wait until the operation completed on every card'
            cand --strict 'Treat a card already in the requested state as a failure (exit 9)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'micctl;reset'= {
            cand -t 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl''s rule)'
            cand --timeout 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl''s rule)'
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand -w 'Wait until the operation completed on every card'
            cand --wait 'Wait until the operation completed on every card'
            cand --strict 'Treat a card already in the requested state as a failure (exit 9)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'micctl;reboot'= {
            cand --firmware 'Card OS image, relative to lib/firmware'
            cand --ramdisk 'Ramdisk, relative to lib/firmware [default: mic/micN.image]'
            cand --cmdline 'Kernel command line [default: the card''s own, or mpssd''s default with a static address]'
            cand --bootmode 'Boot mode'
            cand -t 'Give up after this long, for the whole reboot (default as for boot)'
            cand --timeout 'Give up after this long, for the whole reboot (default as for boot)'
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand -w 'Also wait until the card OS is up again (the shutdown and reset are always waited for)'
            cand --wait 'Also wait until the card OS is up again (the shutdown and reset are always waited for)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'micctl;wait'= {
            cand -s 'The state to wait for'
            cand --state 'The state to wait for'
            cand -t 'Give up after this long (default as for boot --wait)'
            cand --timeout 'Give up after this long (default as for boot --wait)'
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'micctl;log'= {
            cand -l 'Show this level and more severe ones: a name (emerg, alert, crit, err, warn, notice, info, debug) or a number 0-7'
            cand --level 'Show this level and more severe ones: a name (emerg, alert, crit, err, warn, notice, info, debug) or a number 0-7'
            cand --since 'Show records from this card time on: seconds since card boot (12.5) or ''DURATION ago'' relative to the newest record (''30s ago'')'
            cand --time-format 'Timestamp style: kernel ([   12.345678]), human (+1m02.345s since boot), delta (time since the previous record) or none'
            cand --duration 'With --follow: stop after this long'
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand -f 'Keep printing new records as the card logs them (across reboots)'
            cand --follow 'Keep printing new records as the card logs them (across reboots)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'micctl;events'= {
            cand -k 'Only events of this kind (repeat for several)'
            cand --kind 'Only events of this kind (repeat for several)'
            cand -n 'Stop after this many events (of the cards and kinds asked for)'
            cand --count 'Stop after this many events (of the cards and kinds asked for)'
            cand --duration 'Stop after this long (exit 0)'
            cand -t 'With --count: give up after this long if fewer events came (exit 6)'
            cand --timeout 'With --count: give up after this long if fewer events came (exit 6)'
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'micctl;crash'= {
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand list 'One row per bundle, oldest first: card, time, shutdown status, size, the panic line'
            cand show 'What a bundle holds: summary, panic line, timeline, the end of the card log and console'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'micctl;crash;list'= {
            cand --dir 'The crash directory, relative to the root unless absolute (mpssd.toml [crash] dir)'
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'micctl;crash;show'= {
            cand --dir 'The crash directory, relative to the root unless absolute (mpssd.toml [crash] dir)'
            cand -n 'Lines of the card log and the console shown (their ends)'
            cand --lines 'Lines of the card log and the console shown (their ends)'
            cand --file 'Print this file of the bundle instead (control characters escaped)'
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'micctl;crash;help'= {
            cand list 'One row per bundle, oldest first: card, time, shutdown status, size, the panic line'
            cand show 'What a bundle holds: summary, panic line, timeline, the end of the card log and console'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'micctl;crash;help;list'= {
        }
        &'micctl;crash;help;show'= {
        }
        &'micctl;crash;help;help'= {
        }
        &'micctl;console'= {
            cand -r 'Show this much of the console''s past output first: lines (20), bytes (512B, 4K, 1MiB) or all [default: none]'
            cand --replay 'Show this much of the console''s past output first: lines (20), bytes (512B, 4K, 1MiB) or all [default: none]'
            cand -e 'The key that detaches: ^X or ctrl-X for a control key (^] is ctrl-]), or none'
            cand --escape 'The key that detaches: ^X or ctrl-X for a control key (^] is ctrl-]), or none'
            cand -u 'End (exit 0) once the card''s output contains TEXT'
            cand --until 'End (exit 0) once the card''s output contains TEXT'
            cand -t 'Give up after this long (exit 6): the attach itself, and --until or the answer to a script'
            cand --timeout 'Give up after this long (exit 6): the attach itself, and --until or the answer to a script'
            cand --idle 'With stdin not a terminal: end (exit 0) once the card has printed nothing for this long after the input was typed; 0 never ends that way'
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --color 'When to colour human output (NO_COLOR in the environment also disables colour under auto)'
            cand --ro 'Read-only: see the console, never type into it'
            cand --read-only 'Read-only: see the console, never type into it'
            cand -f 'Take the console read-write even if another client holds it (that client is told and detached)'
            cand --force 'Take the console read-write even if another client holds it (that client is told and detached)'
            cand --follow 'Stay attached through the card''s reboots and crashes (the card going down ends the session only if mpssd leaves it down)'
            cand --json 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'micctl;help'= {
            cand status 'One row per card: state, shutdown status, family, stepping, IP address, time in state, POST code'
            cand info 'Every sysfs attribute of a card and the useful debugfs facts (POST code, SMPT, device page)'
            cand boot 'Boot cards with the micctrl defaults (linux, mic/uos.img, mic/micN.image)'
            cand shutdown 'Ask the card OS to shut down'
            cand reset 'Reset cards to offline'
            cand reboot 'Shut down, reset and boot again'
            cand wait 'Wait until cards reach a state'
            cand log 'The card kernel log, dmesg style'
            cand events 'mpssd''s events as they happen: supervision, devices, crashes, configuration reloads'
            cand crash 'mpssd''s crash forensics bundles (DIR/var/lib/mpssd/crash/micN-TIME/); mpssd need not run'
            cand console 'Attach to a card''s console (through mpssd): type into it, watch it, or script it'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'micctl;help;status'= {
        }
        &'micctl;help;info'= {
        }
        &'micctl;help;boot'= {
        }
        &'micctl;help;shutdown'= {
        }
        &'micctl;help;reset'= {
        }
        &'micctl;help;reboot'= {
        }
        &'micctl;help;wait'= {
        }
        &'micctl;help;log'= {
        }
        &'micctl;help;events'= {
        }
        &'micctl;help;crash'= {
            cand list 'One row per bundle, oldest first: card, time, shutdown status, size, the panic line'
            cand show 'What a bundle holds: summary, panic line, timeline, the end of the card log and console'
        }
        &'micctl;help;crash;list'= {
        }
        &'micctl;help;crash;show'= {
        }
        &'micctl;help;console'= {
        }
        &'micctl;help;help'= {
        }
    ]
    $completions[$command]
}
