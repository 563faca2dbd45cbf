# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_tproxyd_global_optspecs
    string join \n c/conf= u/upgrade d/daemon t/test nocapture h/help V/version
end

function __fish_tproxyd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_tproxyd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_tproxyd_using_subcommand
    set -l cmd (__fish_tproxyd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c tproxyd -n "__fish_tproxyd_needs_command" -s c -l conf -d 'The configuration file: Pingora\'s server keys and a `tproxyd:` section [default: built-in defaults, one tproxy listener on [::]:8888]' -r
complete -c tproxyd -n "__fish_tproxyd_needs_command" -s u -l upgrade -d 'Take over the listening sockets of a running tproxyd (graceful upgrade: start this, then send the old process SIGQUIT)'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -s d -l daemon -d 'Run in the background; the pid goes to the configuration\'s `pid_file`'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -s t -l test -d 'Check the configuration and exit (the same as `tproxyd check`)'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -l nocapture -d 'Ignored; accepted because `cargo test` may pass it'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -s V -l version -d 'Print version'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -f -a "run" -d 'Run the proxy (the default)'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -f -a "check" -d 'Check a configuration and exit: 0 when valid, else 1 with the key and the reason'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -f -a "rules" -d 'Print the nftables table and policy routing that steer traffic to the listeners, or apply or remove them'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -f -a "doctor" -d 'Check this host against the configuration: one line per check (ok, warn, FAIL) with the fix; exits 1 when a check fails'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -f -a "explain" -d 'Show how the policy decides one flow, rule by rule, without sending traffic; exits 0 when the flow is allowed, 1 when it is denied'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -f -a "manpage" -d 'Print the manual page tproxyd(8) in roff'
complete -c tproxyd -n "__fish_tproxyd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand run" -s c -l conf -d 'The configuration file: Pingora\'s server keys and a `tproxyd:` section [default: built-in defaults, one tproxy listener on [::]:8888]' -r
complete -c tproxyd -n "__fish_tproxyd_using_subcommand run" -s u -l upgrade -d 'Take over the listening sockets of a running tproxyd (graceful upgrade: start this, then send the old process SIGQUIT)'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand run" -s d -l daemon -d 'Run in the background; the pid goes to the configuration\'s `pid_file`'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand run" -s t -l test -d 'Check the configuration and exit (the same as `tproxyd check`)'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand run" -l nocapture -d 'Ignored; accepted because `cargo test` may pass it'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand run" -s h -l help -d 'Print help'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand check" -s c -l conf -d 'The configuration file' -r
complete -c tproxyd -n "__fish_tproxyd_using_subcommand check" -s h -l help -d 'Print help'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand rules" -s c -l conf -d 'The configuration file' -r
complete -c tproxyd -n "__fish_tproxyd_using_subcommand rules" -l apply -d 'Load the table and install the policy routing (idempotent)'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand rules" -l remove -d 'Remove the table and the policy routing'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand rules" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand doctor" -s c -l conf -d 'The configuration file' -r
complete -c tproxyd -n "__fish_tproxyd_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand explain" -s c -l conf -d 'The configuration file' -r
complete -c tproxyd -n "__fish_tproxyd_using_subcommand explain" -l client -d 'The client\'s address' -r
complete -c tproxyd -n "__fish_tproxyd_using_subcommand explain" -l dst -d 'The address the client connects to (on a forward listener: where the name resolves)' -r
complete -c tproxyd -n "__fish_tproxyd_using_subcommand explain" -l host -d 'The name the client asks for: its Host header, or a CONNECT\'s host' -r
complete -c tproxyd -n "__fish_tproxyd_using_subcommand explain" -l sni -d 'The name in the client\'s TLS ClientHello (SNI)' -r
complete -c tproxyd -n "__fish_tproxyd_using_subcommand explain" -l listener -d 'The listener the flow arrives on [default: the one intercepting the port]' -r
complete -c tproxyd -n "__fish_tproxyd_using_subcommand explain" -l method -d 'The request\'s method (HTTP flows; CONNECT on a forward listener)' -r
complete -c tproxyd -n "__fish_tproxyd_using_subcommand explain" -l path -d 'The request\'s path (HTTP flows)' -r
complete -c tproxyd -n "__fish_tproxyd_using_subcommand explain" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand completions" -s h -l help -d 'Print help'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand manpage" -s h -l help -d 'Print help'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand help; and not __fish_seen_subcommand_from run check rules doctor explain completions manpage help" -f -a "run" -d 'Run the proxy (the default)'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand help; and not __fish_seen_subcommand_from run check rules doctor explain completions manpage help" -f -a "check" -d 'Check a configuration and exit: 0 when valid, else 1 with the key and the reason'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand help; and not __fish_seen_subcommand_from run check rules doctor explain completions manpage help" -f -a "rules" -d 'Print the nftables table and policy routing that steer traffic to the listeners, or apply or remove them'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand help; and not __fish_seen_subcommand_from run check rules doctor explain completions manpage help" -f -a "doctor" -d 'Check this host against the configuration: one line per check (ok, warn, FAIL) with the fix; exits 1 when a check fails'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand help; and not __fish_seen_subcommand_from run check rules doctor explain completions manpage help" -f -a "explain" -d 'Show how the policy decides one flow, rule by rule, without sending traffic; exits 0 when the flow is allowed, 1 when it is denied'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand help; and not __fish_seen_subcommand_from run check rules doctor explain completions manpage help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand help; and not __fish_seen_subcommand_from run check rules doctor explain completions manpage help" -f -a "manpage" -d 'Print the manual page tproxyd(8) in roff'
complete -c tproxyd -n "__fish_tproxyd_using_subcommand help; and not __fish_seen_subcommand_from run check rules doctor explain completions manpage help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
