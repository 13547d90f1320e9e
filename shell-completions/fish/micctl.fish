# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_micctl_global_optspecs
    string join \n root= json color= h/help V/version
end

function __fish_micctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_micctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_micctl_using_subcommand
    set -l cmd (__fish_micctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c micctl -n "__fish_micctl_needs_command" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_needs_command" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_needs_command" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_needs_command" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_needs_command" -f -a "status" -d 'One row per card: state, shutdown status, family, stepping, IP address, time in state, POST code'
complete -c micctl -n "__fish_micctl_needs_command" -f -a "info" -d 'Every sysfs attribute of a card and the useful debugfs facts (POST code, SMPT, device page)'
complete -c micctl -n "__fish_micctl_needs_command" -f -a "boot" -d 'Boot cards with the micctrl defaults (linux, mic/uos.img, mic/micN.image)'
complete -c micctl -n "__fish_micctl_needs_command" -f -a "shutdown" -d 'Ask the card OS to shut down'
complete -c micctl -n "__fish_micctl_needs_command" -f -a "reset" -d 'Reset cards to offline'
complete -c micctl -n "__fish_micctl_needs_command" -f -a "reboot" -d 'Shut down, reset and boot again'
complete -c micctl -n "__fish_micctl_needs_command" -f -a "wait" -d 'Wait until cards reach a state'
complete -c micctl -n "__fish_micctl_needs_command" -f -a "log" -d 'The card kernel log, dmesg style'
complete -c micctl -n "__fish_micctl_needs_command" -f -a "events" -d 'mpssd\'s events as they happen: supervision, devices, crashes, configuration reloads'
complete -c micctl -n "__fish_micctl_needs_command" -f -a "crash" -d 'mpssd\'s crash forensics bundles (DIR/var/lib/mpssd/crash/micN-TIME/); mpssd need not run'
complete -c micctl -n "__fish_micctl_needs_command" -f -a "console" -d 'Attach to a card\'s console (through mpssd): type into it, watch it, or script it'
complete -c micctl -n "__fish_micctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c micctl -n "__fish_micctl_using_subcommand status" -l duration -d 'With --watch: stop after this long' -r
complete -c micctl -n "__fish_micctl_using_subcommand status" -s t -l timeout -d 'Give up (exit 6) if the driver has not answered within this long: for the whole status, or with --watch for each read [default: 10s]' -r
complete -c micctl -n "__fish_micctl_using_subcommand status" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand status" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand status" -s w -l watch -d 'Keep running and print every change as it happens (JSON Lines with --json)'
complete -c micctl -n "__fish_micctl_using_subcommand status" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand status" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand info" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand info" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand info" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand info" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand info" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand boot" -l firmware -d 'Card OS image, relative to lib/firmware' -r
complete -c micctl -n "__fish_micctl_using_subcommand boot" -l ramdisk -d 'Ramdisk, relative to lib/firmware [default: mic/micN.image]' -r
complete -c micctl -n "__fish_micctl_using_subcommand boot" -l cmdline -d 'Kernel command line [default: the card\'s own, or mpssd\'s default with a static address]' -r
complete -c micctl -n "__fish_micctl_using_subcommand boot" -l bootmode -d 'Boot mode' -r -f -a "linux\t'A Linux bzImage (the card OS)'
elf\t'A bare ELF image'"
complete -c micctl -n "__fish_micctl_using_subcommand boot" -s t -l timeout -d 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl\'s rule)' -r
complete -c micctl -n "__fish_micctl_using_subcommand boot" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand boot" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand boot" -s w -l wait -d 'Wait until the operation completed on every card'
complete -c micctl -n "__fish_micctl_using_subcommand boot" -l strict -d 'Treat a card already in the requested state as a failure (exit 9)'
complete -c micctl -n "__fish_micctl_using_subcommand boot" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand boot" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand boot" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand shutdown" -s t -l timeout -d 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl\'s rule)' -r
complete -c micctl -n "__fish_micctl_using_subcommand shutdown" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand shutdown" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand shutdown" -s w -l wait -d 'Wait until the operation completed on every card'
complete -c micctl -n "__fish_micctl_using_subcommand shutdown" -l strict -d 'Treat a card already in the requested state as a failure (exit 9)'
complete -c micctl -n "__fish_micctl_using_subcommand shutdown" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand shutdown" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand shutdown" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand reset" -s t -l timeout -d 'Give up waiting after this long (e.g. 90, 90s, 500ms, 5m, 1h30m). Default: 90 s plus 60 s per extra card, between 300 s and 600 s (micctrl\'s rule)' -r
complete -c micctl -n "__fish_micctl_using_subcommand reset" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand reset" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand reset" -s w -l wait -d 'Wait until the operation completed on every card'
complete -c micctl -n "__fish_micctl_using_subcommand reset" -l strict -d 'Treat a card already in the requested state as a failure (exit 9)'
complete -c micctl -n "__fish_micctl_using_subcommand reset" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand reset" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand reset" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand reboot" -l firmware -d 'Card OS image, relative to lib/firmware' -r
complete -c micctl -n "__fish_micctl_using_subcommand reboot" -l ramdisk -d 'Ramdisk, relative to lib/firmware [default: mic/micN.image]' -r
complete -c micctl -n "__fish_micctl_using_subcommand reboot" -l cmdline -d 'Kernel command line [default: the card\'s own, or mpssd\'s default with a static address]' -r
complete -c micctl -n "__fish_micctl_using_subcommand reboot" -l bootmode -d 'Boot mode' -r -f -a "linux\t'A Linux bzImage (the card OS)'
elf\t'A bare ELF image'"
complete -c micctl -n "__fish_micctl_using_subcommand reboot" -s t -l timeout -d 'Give up after this long, for the whole reboot (default as for boot)' -r
complete -c micctl -n "__fish_micctl_using_subcommand reboot" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand reboot" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand reboot" -s w -l wait -d 'Also wait until the card OS is up again (the shutdown and reset are always waited for)'
complete -c micctl -n "__fish_micctl_using_subcommand reboot" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand reboot" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand reboot" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand wait" -s s -l state -d 'The state to wait for' -r -f -a "offline\t'Ready to boot'
online\t'Booted (the image was handed to the card)'
shutting_down\t'Shutting down, or shut down and waiting for a reset'
reset_failed\t'The last reset did not complete'"
complete -c micctl -n "__fish_micctl_using_subcommand wait" -s t -l timeout -d 'Give up after this long (default as for boot --wait)' -r
complete -c micctl -n "__fish_micctl_using_subcommand wait" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand wait" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand wait" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand wait" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand wait" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand log" -s l -l level -d 'Show this level and more severe ones: a name (emerg, alert, crit, err, warn, notice, info, debug) or a number 0-7' -r
complete -c micctl -n "__fish_micctl_using_subcommand log" -l since -d 'Show records from this card time on: seconds since card boot (12.5) or \'DURATION ago\' relative to the newest record (\'30s ago\')' -r
complete -c micctl -n "__fish_micctl_using_subcommand log" -l time-format -d 'Timestamp style: kernel ([   12.345678]), human (+1m02.345s since boot), delta (time since the previous record) or none' -r -f -a "kernel\t'dmesg\'s [seconds.micros] since card boot'
human\t'Time since card boot as 1h02m03.456s'
delta\t'Time since the previous record, as [  +0.001234]'
none\t'No timestamp'"
complete -c micctl -n "__fish_micctl_using_subcommand log" -l duration -d 'With --follow: stop after this long' -r
complete -c micctl -n "__fish_micctl_using_subcommand log" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand log" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand log" -s f -l follow -d 'Keep printing new records as the card logs them (across reboots)'
complete -c micctl -n "__fish_micctl_using_subcommand log" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand log" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand log" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand events" -s k -l kind -d 'Only events of this kind (repeat for several)' -r -f -a "card_state\t''
supervisor\t''
shutdown_status\t''
crash\t''
reset\t''
boot\t''
backoff\t''
crash_loop\t''
devices_added\t''
devices_removed\t''
config_reloaded\t''
daemon\t''
error\t''
lagged\t''"
complete -c micctl -n "__fish_micctl_using_subcommand events" -s n -l count -d 'Stop after this many events (of the cards and kinds asked for)' -r
complete -c micctl -n "__fish_micctl_using_subcommand events" -l duration -d 'Stop after this long (exit 0)' -r
complete -c micctl -n "__fish_micctl_using_subcommand events" -s t -l timeout -d 'With --count: give up after this long if fewer events came (exit 6)' -r
complete -c micctl -n "__fish_micctl_using_subcommand events" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand events" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand events" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand events" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand events" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and not __fish_seen_subcommand_from list show help" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand crash; and not __fish_seen_subcommand_from list show help" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand crash; and not __fish_seen_subcommand_from list show help" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and not __fish_seen_subcommand_from list show help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and not __fish_seen_subcommand_from list show help" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and not __fish_seen_subcommand_from list show help" -f -a "list" -d 'One row per bundle, oldest first: card, time, shutdown status, size, the panic line'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and not __fish_seen_subcommand_from list show help" -f -a "show" -d 'What a bundle holds: summary, panic line, timeline, the end of the card log and console'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and not __fish_seen_subcommand_from list show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from list" -l dir -d 'The crash directory, relative to the root unless absolute (mpssd.toml [crash] dir)' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from list" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from list" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from list" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from show" -l dir -d 'The crash directory, relative to the root unless absolute (mpssd.toml [crash] dir)' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from show" -s n -l lines -d 'Lines of the card log and the console shown (their ends)' -r
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from show" -l file -d 'Print this file of the bundle instead (control characters escaped)' -r -f -a "summary.json\t''
shutdown_status\t''
timeline.txt\t''
card.log\t''
console.log\t''
dp.txt\t''
smpt.txt\t''
errors.txt\t''"
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from show" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from show" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from show" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from help" -f -a "list" -d 'One row per bundle, oldest first: card, time, shutdown status, size, the panic line'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from help" -f -a "show" -d 'What a bundle holds: summary, panic line, timeline, the end of the card log and console'
complete -c micctl -n "__fish_micctl_using_subcommand crash; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c micctl -n "__fish_micctl_using_subcommand console" -s r -l replay -d 'Show this much of the console\'s past output first: lines (20), bytes (512B, 4K, 1MiB) or all [default: none]' -r
complete -c micctl -n "__fish_micctl_using_subcommand console" -s e -l escape -d 'The key that detaches: ^X or ctrl-X for a control key (^] is ctrl-]), or none' -r
complete -c micctl -n "__fish_micctl_using_subcommand console" -s u -l until -d 'End (exit 0) once the card\'s output contains TEXT' -r
complete -c micctl -n "__fish_micctl_using_subcommand console" -s t -l timeout -d 'Give up after this long (exit 6): the attach itself, and --until or the answer to a script' -r
complete -c micctl -n "__fish_micctl_using_subcommand console" -l idle -d 'With stdin not a terminal: end (exit 0) once the card has printed nothing for this long after the input was typed; 0 never ends that way' -r
complete -c micctl -n "__fish_micctl_using_subcommand console" -l root -d 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware); `/` on a real system, micemu\'s --root for an emulated fleet' -r -f -a "(__fish_complete_directories)"
complete -c micctl -n "__fish_micctl_using_subcommand console" -l color -d 'When to colour human output (NO_COLOR in the environment also disables colour under auto)' -r -f -a "auto\t'Colour when stdout is a terminal, TERM is not dumb and NO_COLOR is unset'
always\t'Always colour'
never\t'Never colour'"
complete -c micctl -n "__fish_micctl_using_subcommand console" -l ro -l read-only -d 'Read-only: see the console, never type into it'
complete -c micctl -n "__fish_micctl_using_subcommand console" -s f -l force -d 'Take the console read-write even if another client holds it (that client is told and detached)'
complete -c micctl -n "__fish_micctl_using_subcommand console" -l follow -d 'Stay attached through the card\'s reboots and crashes (the card going down ends the session only if mpssd leaves it down)'
complete -c micctl -n "__fish_micctl_using_subcommand console" -l json -d 'Machine-readable output: one JSON document with a schema_version, or JSON Lines for streams (log, status --watch, wait, events, console)'
complete -c micctl -n "__fish_micctl_using_subcommand console" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micctl -n "__fish_micctl_using_subcommand console" -s V -l version -d 'Print version'
complete -c micctl -n "__fish_micctl_using_subcommand help; and not __fish_seen_subcommand_from status info boot shutdown reset reboot wait log events crash console help" -f -a "status" -d 'One row per card: state, shutdown status, family, stepping, IP address, time in state, POST code'
complete -c micctl -n "__fish_micctl_using_subcommand help; and not __fish_seen_subcommand_from status info boot shutdown reset reboot wait log events crash console help" -f -a "info" -d 'Every sysfs attribute of a card and the useful debugfs facts (POST code, SMPT, device page)'
complete -c micctl -n "__fish_micctl_using_subcommand help; and not __fish_seen_subcommand_from status info boot shutdown reset reboot wait log events crash console help" -f -a "boot" -d 'Boot cards with the micctrl defaults (linux, mic/uos.img, mic/micN.image)'
complete -c micctl -n "__fish_micctl_using_subcommand help; and not __fish_seen_subcommand_from status info boot shutdown reset reboot wait log events crash console help" -f -a "shutdown" -d 'Ask the card OS to shut down'
complete -c micctl -n "__fish_micctl_using_subcommand help; and not __fish_seen_subcommand_from status info boot shutdown reset reboot wait log events crash console help" -f -a "reset" -d 'Reset cards to offline'
complete -c micctl -n "__fish_micctl_using_subcommand help; and not __fish_seen_subcommand_from status info boot shutdown reset reboot wait log events crash console help" -f -a "reboot" -d 'Shut down, reset and boot again'
complete -c micctl -n "__fish_micctl_using_subcommand help; and not __fish_seen_subcommand_from status info boot shutdown reset reboot wait log events crash console help" -f -a "wait" -d 'Wait until cards reach a state'
complete -c micctl -n "__fish_micctl_using_subcommand help; and not __fish_seen_subcommand_from status info boot shutdown reset reboot wait log events crash console help" -f -a "log" -d 'The card kernel log, dmesg style'
complete -c micctl -n "__fish_micctl_using_subcommand help; and not __fish_seen_subcommand_from status info boot shutdown reset reboot wait log events crash console help" -f -a "events" -d 'mpssd\'s events as they happen: supervision, devices, crashes, configuration reloads'
complete -c micctl -n "__fish_micctl_using_subcommand help; and not __fish_seen_subcommand_from status info boot shutdown reset reboot wait log events crash console help" -f -a "crash" -d 'mpssd\'s crash forensics bundles (DIR/var/lib/mpssd/crash/micN-TIME/); mpssd need not run'
complete -c micctl -n "__fish_micctl_using_subcommand help; and not __fish_seen_subcommand_from status info boot shutdown reset reboot wait log events crash console help" -f -a "console" -d 'Attach to a card\'s console (through mpssd): type into it, watch it, or script it'
complete -c micctl -n "__fish_micctl_using_subcommand help; and not __fish_seen_subcommand_from status info boot shutdown reset reboot wait log events crash console help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c micctl -n "__fish_micctl_using_subcommand help; and __fish_seen_subcommand_from crash" -f -a "list" -d 'One row per bundle, oldest first: card, time, shutdown status, size, the panic line'
complete -c micctl -n "__fish_micctl_using_subcommand help; and __fish_seen_subcommand_from crash" -f -a "show" -d 'What a bundle holds: summary, panic line, timeline, the end of the card log and console'
