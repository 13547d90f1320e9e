
use builtin;
use str;

set edit:completion:arg-completer[mictop] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'mictop'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'mictop'= {
            cand --root 'Directory all card paths are resolved under [env: MIC_ROOT; default /]'
            cand --interval 'How often the card log and boot progress are read (500ms, 2s, ...)'
            cand --config 'Configuration file, read again whenever it is saved [default: $XDG_CONFIG_HOME/mictop/config.toml]'
            cand --demo-cards 'Number of emulated cards for --demo'
            cand --no-mouse 'Do not capture the mouse (keeps the terminal''s own selection)'
            cand --demo 'Start emulated cards (micemu, in-process) under a temporary root and an mpssd for them (their consoles, network and disks; its network in a namespace of its own), boot them and watch them; c attaches a card''s console through mpssd''s broker. Quitting tears it all down. Needs FUSE'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
    ]
    $completions[$command]
}
