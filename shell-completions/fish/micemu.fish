# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_micemu_global_optspecs
    string join \n root= cards= memory= timing= reset-ms= boot-ms= ack-ms= device-id= stepping= log-buf-len= force log-level= h/help V/version
end

function __fish_micemu_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_micemu_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_micemu_using_subcommand
    set -l cmd (__fish_micemu_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c micemu -n "__fish_micemu_needs_command" -l root -d 'Root directory to serve (sys/, lib/firmware/, run/ are created in it)' -r -F
complete -c micemu -n "__fish_micemu_needs_command" -l cards -d 'Number of cards (1-256)' -r
complete -c micemu -n "__fish_micemu_needs_command" -l memory -d 'GDDR per card (K, M, G suffixes; at least 256M)' -r
complete -c micemu -n "__fish_micemu_needs_command" -l timing -d 'Timing preset' -r -f -a "realistic\t'Close to real cards: resets take seconds, boots several seconds'
fast\t'The same sequences a hundred times quicker (tests, demos)'"
complete -c micemu -n "__fish_micemu_needs_command" -l reset-ms -d 'Override the reset duration in milliseconds' -r
complete -c micemu -n "__fish_micemu_needs_command" -l boot-ms -d 'Override the boot duration (bootstrap to init) in milliseconds' -r
complete -c micemu -n "__fish_micemu_needs_command" -l ack-ms -d 'Override the virtio handshakes\' budget (used rings, config change, removal, device reset) in milliseconds' -r
complete -c micemu -n "__fish_micemu_needs_command" -l device-id -d 'PCI device IDs handed out in turn (hex), e.g. 2250,225d' -r
complete -c micemu -n "__fish_micemu_needs_command" -l stepping -d 'Steppings handed out in turn: A0, B0, B1, C0 or a hex revision' -r
complete -c micemu -n "__fish_micemu_needs_command" -l log-buf-len -d 'Size of the card kernel log buffer (power of two, 4K-16M)' -r
complete -c micemu -n "__fish_micemu_needs_command" -l log-level -d 'micemu\'s own log lines on stderr (what the host driver would log): off, error, warn, info, debug or trace' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c micemu -n "__fish_micemu_needs_command" -l force -d 'Unmount a dead FUSE mount a killed micemu left at DIR/sys (only one the kernel proves dead: Transport endpoint is not connected)'
complete -c micemu -n "__fish_micemu_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micemu -n "__fish_micemu_needs_command" -s V -l version -d 'Print version'
complete -c micemu -n "__fish_micemu_needs_command" -f -a "inject" -d 'Inject a fault into, or act inside, a running emulated card'
complete -c micemu -n "__fish_micemu_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c micemu -n "__fish_micemu_using_subcommand inject" -l root -d 'Root directory of the running micemu' -r -F
complete -c micemu -n "__fish_micemu_using_subcommand inject" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c micemu -n "__fish_micemu_using_subcommand help; and not __fish_seen_subcommand_from inject help" -f -a "inject" -d 'Inject a fault into, or act inside, a running emulated card'
complete -c micemu -n "__fish_micemu_using_subcommand help; and not __fish_seen_subcommand_from inject help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
