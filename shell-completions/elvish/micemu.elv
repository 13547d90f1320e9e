
use builtin;
use str;

set edit:completion:arg-completer[micemu] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'micemu'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'micemu'= {
            cand --root 'Root directory to serve (sys/, lib/firmware/, run/ are created in it)'
            cand --cards 'Number of cards (1-256)'
            cand --memory 'GDDR per card (K, M, G suffixes; at least 256M)'
            cand --timing 'Timing preset'
            cand --reset-ms 'Override the reset duration in milliseconds'
            cand --boot-ms 'Override the boot duration (bootstrap to init) in milliseconds'
            cand --ack-ms 'Override the virtio handshakes'' budget (used rings, config change, removal, device reset) in milliseconds'
            cand --device-id 'PCI device IDs handed out in turn (hex), e.g. 2250,225d'
            cand --stepping 'Steppings handed out in turn: A0, B0, B1, C0 or a hex revision'
            cand --log-buf-len 'Size of the card kernel log buffer (power of two, 4K-16M)'
            cand --log-level 'micemu''s own log lines on stderr (what the host driver would log): off, error, warn, info, debug or trace'
            cand --force 'Unmount a dead FUSE mount a killed micemu left at DIR/sys (only one the kernel proves dead: Transport endpoint is not connected)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand inject 'Inject a fault into, or act inside, a running emulated card'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'micemu;inject'= {
            cand --root 'Root directory of the running micemu'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'micemu;help'= {
            cand inject 'Inject a fault into, or act inside, a running emulated card'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'micemu;help;inject'= {
        }
        &'micemu;help;help'= {
        }
    ]
    $completions[$command]
}
