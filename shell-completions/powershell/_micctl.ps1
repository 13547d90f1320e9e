
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'micctl' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'micctl'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'micctl' {
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'One row per card: state, shutdown status, family, stepping, IP address, time in state, POST code')
            [CompletionResult]::new('info', 'info', [CompletionResultType]::ParameterValue, 'Every sysfs attribute of a card and the useful debugfs facts (POST code, SMPT, device page)')
            [CompletionResult]::new('boot', 'boot', [CompletionResultType]::ParameterValue, 'Boot cards with the micctrl defaults (linux, mic/uos.img, mic/micN.image)')
            [CompletionResult]::new('shutdown', 'shutdown', [CompletionResultType]::ParameterValue, 'Ask the card OS to shut down')
            [CompletionResult]::new('reset', 'reset', [CompletionResultType]::ParameterValue, 'Reset cards to offline')
            [CompletionResult]::new('reboot', 'reboot', [CompletionResultType]::ParameterValue, 'Shut down, reset and boot again')
            [CompletionResult]::new('wait', 'wait', [CompletionResultType]::ParameterValue, 'Wait until cards reach a state')
            [CompletionResult]::new('log', 'log', [CompletionResultType]::ParameterValue, 'The card kernel log, dmesg style')
            [CompletionResult]::new('events', 'events', [CompletionResultType]::ParameterValue, 'mpssd''s events as they happen: supervision, devices, crashes, configuration reloads')
            [CompletionResult]::new('crash', 'crash', [CompletionResultType]::ParameterValue, 'mpssd''s crash forensics bundles (DIR/var/lib/mpssd/crash/micN-TIME/); mpssd need not run')
            [CompletionResult]::new('console', 'console', [CompletionResultType]::ParameterValue, 'Attach to a card''s console (through mpssd): type into it, watch it, or script it')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'micctl;status' {
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'With --watch: stop after this long')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Give up (exit 6) if the driver has not answered within this long: for the whole status, or with --watch for each read [default: 10s]')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up (exit 6) if the driver has not answered within this long: for the whole status, or with --watch for each read [default: 10s]')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Keep running and print every change as it happens (JSON Lines with --json)')
            [CompletionResult]::new('--watch', '--watch', [CompletionResultType]::ParameterName, 'Keep running and print every change as it happens (JSON Lines with --json)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'micctl;info' {
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'micctl;boot' {
            [CompletionResult]::new('--firmware', '--firmware', [CompletionResultType]::ParameterName, 'Card OS image, relative to lib/firmware')
            [CompletionResult]::new('--ramdisk', '--ramdisk', [CompletionResultType]::ParameterName, 'Ramdisk, relative to lib/firmware [default: mic/micN.image]')
            [CompletionResult]::new('--cmdline', '--cmdline', [CompletionResultType]::ParameterName, 'Kernel command line [default: the card''s own, or mpssd''s default with a static address]')
            [CompletionResult]::new('--bootmode', '--bootmode', [CompletionResultType]::ParameterName, 'Boot mode')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl''s rule)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl''s rule)')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Wait until the operation completed on every card')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Wait until the operation completed on every card')
            [CompletionResult]::new('--strict', '--strict', [CompletionResultType]::ParameterName, 'Treat a card already in the requested state as a failure (exit 9)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'micctl;shutdown' {
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl''s rule)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl''s rule)')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Wait until the operation completed on every card')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Wait until the operation completed on every card')
            [CompletionResult]::new('--strict', '--strict', [CompletionResultType]::ParameterName, 'Treat a card already in the requested state as a failure (exit 9)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'micctl;reset' {
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl''s rule)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl''s rule)')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Wait until the operation completed on every card')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Wait until the operation completed on every card')
            [CompletionResult]::new('--strict', '--strict', [CompletionResultType]::ParameterName, 'Treat a card already in the requested state as a failure (exit 9)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'micctl;reboot' {
            [CompletionResult]::new('--firmware', '--firmware', [CompletionResultType]::ParameterName, 'Card OS image, relative to lib/firmware')
            [CompletionResult]::new('--ramdisk', '--ramdisk', [CompletionResultType]::ParameterName, 'Ramdisk, relative to lib/firmware [default: mic/micN.image]')
            [CompletionResult]::new('--cmdline', '--cmdline', [CompletionResultType]::ParameterName, 'Kernel command line [default: the card''s own, or mpssd''s default with a static address]')
            [CompletionResult]::new('--bootmode', '--bootmode', [CompletionResultType]::ParameterName, 'Boot mode')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Give up after this long, for the whole reboot (default as for boot)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up after this long, for the whole reboot (default as for boot)')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Also wait until the card OS is up again (the shutdown and reset are always waited for)')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Also wait until the card OS is up again (the shutdown and reset are always waited for)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'micctl;wait' {
            [CompletionResult]::new('-s', '-s', [CompletionResultType]::ParameterName, 'The state to wait for')
            [CompletionResult]::new('--state', '--state', [CompletionResultType]::ParameterName, 'The state to wait for')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Give up after this long (default as for boot --wait)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up after this long (default as for boot --wait)')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'micctl;log' {
            [CompletionResult]::new('-l', '-l', [CompletionResultType]::ParameterName, 'Show this level and more severe ones: a name (emerg, alert, crit, err, warn, notice, info, debug) or a number 0-7')
            [CompletionResult]::new('--level', '--level', [CompletionResultType]::ParameterName, 'Show this level and more severe ones: a name (emerg, alert, crit, err, warn, notice, info, debug) or a number 0-7')
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'Show records from this card time on: seconds since card boot (12.5) or ''DURATION ago'' relative to the newest record (''30s ago'')')
            [CompletionResult]::new('--time-format', '--time-format', [CompletionResultType]::ParameterName, 'Timestamp style: kernel ([   12.345678]), human (+1m02.345s since boot), delta (time since the previous record) or none')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'With --follow: stop after this long')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep printing new records as the card logs them (across reboots)')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep printing new records as the card logs them (across reboots)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'micctl;events' {
            [CompletionResult]::new('-k', '-k', [CompletionResultType]::ParameterName, 'Only events of this kind (repeat for several)')
            [CompletionResult]::new('--kind', '--kind', [CompletionResultType]::ParameterName, 'Only events of this kind (repeat for several)')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Stop after this many events (of the cards and kinds asked for)')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'Stop after this many events (of the cards and kinds asked for)')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'Stop after this long (exit 0)')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'With --count: give up after this long if fewer events came (exit 6)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'With --count: give up after this long if fewer events came (exit 6)')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'micctl;crash' {
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'One row per bundle, oldest first: card, time, shutdown status, size, the panic line')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'What a bundle holds: summary, panic line, timeline, the end of the card log and console')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'micctl;crash;list' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'The crash directory, relative to the root unless absolute (mpssd.toml [crash] dir)')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'micctl;crash;show' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'The crash directory, relative to the root unless absolute (mpssd.toml [crash] dir)')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Lines of the card log and the console shown (their ends)')
            [CompletionResult]::new('--lines', '--lines', [CompletionResultType]::ParameterName, 'Lines of the card log and the console shown (their ends)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'Print this file of the bundle instead (control characters escaped)')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'micctl;crash;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'One row per bundle, oldest first: card, time, shutdown status, size, the panic line')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'What a bundle holds: summary, panic line, timeline, the end of the card log and console')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'micctl;crash;help;list' {
            break
        }
        'micctl;crash;help;show' {
            break
        }
        'micctl;crash;help;help' {
            break
        }
        'micctl;console' {
            [CompletionResult]::new('-r', '-r', [CompletionResultType]::ParameterName, 'Show this much of the console''s past output first: lines (20), bytes (512B, 4K, 1MiB) or all [default: none]')
            [CompletionResult]::new('--replay', '--replay', [CompletionResultType]::ParameterName, 'Show this much of the console''s past output first: lines (20), bytes (512B, 4K, 1MiB) or all [default: none]')
            [CompletionResult]::new('-e', '-e', [CompletionResultType]::ParameterName, 'The key that detaches: ^X or ctrl-X for a control key (^] is ctrl-]), or none')
            [CompletionResult]::new('--escape', '--escape', [CompletionResultType]::ParameterName, 'The key that detaches: ^X or ctrl-X for a control key (^] is ctrl-]), or none')
            [CompletionResult]::new('-u', '-u', [CompletionResultType]::ParameterName, 'End (exit 0) once the card''s output contains TEXT')
            [CompletionResult]::new('--until', '--until', [CompletionResultType]::ParameterName, 'End (exit 0) once the card''s output contains TEXT')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Give up after this long (exit 6): the attach itself, and --until or the answer to a script')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up after this long (exit 6): the attach itself, and --until or the answer to a script')
            [CompletionResult]::new('--idle', '--idle', [CompletionResultType]::ParameterName, 'With stdin not a terminal: end (exit 0) once the card has printed nothing for this long after the input was typed; 0 never ends that way')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu''s --root for an emulated fleet')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour human output (NO_COLOR in the environment also disables colour under auto)')
            [CompletionResult]::new('--ro', '--ro', [CompletionResultType]::ParameterName, 'Read-only: see the console, never type into it')
            [CompletionResult]::new('--read-only', '--read-only', [CompletionResultType]::ParameterName, 'Read-only: see the console, never type into it')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Take the console read-write even if another client holds it (that client is told and detached)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Take the console read-write even if another client holds it (that client is told and detached)')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Stay attached through the card''s reboots and crashes (the card going down ends the session only if mpssd leaves it down)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'micctl;help' {
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'One row per card: state, shutdown status, family, stepping, IP address, time in state, POST code')
            [CompletionResult]::new('info', 'info', [CompletionResultType]::ParameterValue, 'Every sysfs attribute of a card and the useful debugfs facts (POST code, SMPT, device page)')
            [CompletionResult]::new('boot', 'boot', [CompletionResultType]::ParameterValue, 'Boot cards with the micctrl defaults (linux, mic/uos.img, mic/micN.image)')
            [CompletionResult]::new('shutdown', 'shutdown', [CompletionResultType]::ParameterValue, 'Ask the card OS to shut down')
            [CompletionResult]::new('reset', 'reset', [CompletionResultType]::ParameterValue, 'Reset cards to offline')
            [CompletionResult]::new('reboot', 'reboot', [CompletionResultType]::ParameterValue, 'Shut down, reset and boot again')
            [CompletionResult]::new('wait', 'wait', [CompletionResultType]::ParameterValue, 'Wait until cards reach a state')
            [CompletionResult]::new('log', 'log', [CompletionResultType]::ParameterValue, 'The card kernel log, dmesg style')
            [CompletionResult]::new('events', 'events', [CompletionResultType]::ParameterValue, 'mpssd''s events as they happen: supervision, devices, crashes, configuration reloads')
            [CompletionResult]::new('crash', 'crash', [CompletionResultType]::ParameterValue, 'mpssd''s crash forensics bundles (DIR/var/lib/mpssd/crash/micN-TIME/); mpssd need not run')
            [CompletionResult]::new('console', 'console', [CompletionResultType]::ParameterValue, 'Attach to a card''s console (through mpssd): type into it, watch it, or script it')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'micctl;help;status' {
            break
        }
        'micctl;help;info' {
            break
        }
        'micctl;help;boot' {
            break
        }
        'micctl;help;shutdown' {
            break
        }
        'micctl;help;reset' {
            break
        }
        'micctl;help;reboot' {
            break
        }
        'micctl;help;wait' {
            break
        }
        'micctl;help;log' {
            break
        }
        'micctl;help;events' {
            break
        }
        'micctl;help;crash' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'One row per bundle, oldest first: card, time, shutdown status, size, the panic line')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'What a bundle holds: summary, panic line, timeline, the end of the card log and console')
            break
        }
        'micctl;help;crash;list' {
            break
        }
        'micctl;help;crash;show' {
            break
        }
        'micctl;help;console' {
            break
        }
        'micctl;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
