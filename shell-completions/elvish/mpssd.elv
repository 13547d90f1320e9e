
use builtin;
use str;

set edit:completion:arg-completer[mpssd] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'mpssd'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'mpssd'= {
            cand --root 'Directory all card paths are resolved under (sys/class/mic, debugfs, lib/firmware, etc/mpss, run/mpssd, var/lib/mpssd); `/` on a real system, micemu''s --root for an emulated fleet'
            cand --config 'The configuration file [default: DIR/etc/mpss/mpssd.toml; a missing default file means the built-in defaults]'
            cand --metrics 'Serve Prometheus metrics at ADDR (e.g. 127.0.0.1:9464); loopback only unless metrics.allow_remote; metrics.enabled = false turns it off'
            cand --check-config 'Check the configuration file and exit: 0 if valid, 4 (with the file, line and key named) if not'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
    ]
    $completions[$command]
}
