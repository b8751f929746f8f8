//! The `flowpath` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "flowpath",
    version,
    about = "OVS-compatible userspace fast path for Kubernetes Service traffic"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum Format {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a STEPS file of packets through the flows and print every output.
    Replay {
        /// Flows file (`ovs-ofctl add-flows` format).
        #[arg(long)]
        flows: PathBuf,
        /// Groups file (`ovs-ofctl add-groups` format).
        #[arg(long)]
        groups: Option<PathBuf>,
        /// Port names: NAME=OFPORT,... (OFPORT a number or LOCAL).
        #[arg(long)]
        ports: String,
        /// STEPS file: `PORT HEX`, `@warp MS`, `@flush-ct`, `@ct [ZONE]`.
        #[arg(long)]
        packets: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Write each port's outputs to D/NAME.pcap.
        #[arg(long)]
        pcap_dir: Option<PathBuf>,
        /// Run through the flow cache.
        #[arg(long)]
        cache: bool,
    },
    /// Show how one packet walks the tables, like `ovs-appctl ofproto/trace`
    /// (without `--flows`: through the pipeline `flowpath run` runs now).
    Trace {
        /// Flows file (offline; without it, ask the running node).
        #[arg(long, requires = "ports")]
        flows: Option<PathBuf>,
        /// Groups file.
        #[arg(long)]
        groups: Option<PathBuf>,
        /// Port names: NAME=OFPORT,... (offline; the running node knows its
        /// own).
        #[arg(long)]
        ports: Option<String>,
        /// Port the packet arrives on (name, number or LOCAL).
        #[arg(long)]
        in_port: String,
        /// The packet, as hex.
        #[arg(long, conflicts_with = "flow", required_unless_present = "flow")]
        packet: Option<String>,
        /// The packet, as an OVS flow string (`tcp,nw_src=10.0.0.1,tp_dst=80`).
        #[arg(long)]
        flow: Option<String>,
        /// STEPS run first, so the traced packet meets real conntrack state.
        #[arg(long, requires = "flows")]
        steps: Option<PathBuf>,
        #[command(flatten)]
        sock: Sock,
    },
    /// Validate a flows (and groups) file without running anything.
    Check {
        /// Flows file.
        flows: PathBuf,
        /// Groups file.
        #[arg(long)]
        groups: Option<PathBuf>,
    },
    /// Forward traffic: AF_XDP/TAP ports, per-core workers, the flows of
    /// node.toml. SIGHUP reloads the flows, SIGUSR1 prints counters,
    /// SIGTERM drains and exits with the XDP programs detached.
    Run {
        /// Node configuration (see examples/node.toml).
        #[arg(long)]
        config: PathBuf,
        /// Counter output format (SIGUSR1 and at exit).
        #[arg(long, value_enum, default_value = "text")]
        stats_format: Format,
        /// Only validate node.toml and its flows/groups files, then exit.
        #[arg(long)]
        check: bool,
    },
    /// Compile a node's Services into flows and groups and print them
    /// (`ovs-ofctl add-flows`/`add-groups` text), without running anything.
    Compile {
        /// Node description (node.toml).
        #[arg(long)]
        node: PathBuf,
        /// Service and EndpointSlice manifests (files or directories of
        /// *.yaml/*.json), as `kubectl get svc,endpointslices -o yaml`
        /// prints them [default: node.toml's `services`].
        #[arg(long, num_args = 1..)]
        services: Vec<PathBuf>,
        /// Write the groups here instead of after the flows on stdout.
        #[arg(long)]
        groups_out: Option<PathBuf>,
    },
    /// Print flows the way `ovs-ofctl --no-stats dump-flows` does: those of
    /// a file with `--flows`, else those `flowpath run` runs now (with
    /// `--stats`, as `ovs-ofctl dump-flows`: duration, n_packets, n_bytes,
    /// idle_age, hard_age).
    DumpFlows {
        /// Flows file (offline; without it, ask the running node).
        #[arg(long, conflicts_with = "stats")]
        flows: Option<PathBuf>,
        /// Only this table.
        table: Option<u8>,
        /// Each flow's statistics, summed over the workers.
        #[arg(long)]
        stats: bool,
        #[command(flatten)]
        sock: Sock,
    },
    /// Add flows (`ovs-ofctl add-flow` syntax) to the running node.
    AddFlow {
        /// The flow: `table=T,priority=P,cookie=C,MATCH,actions=...`.
        flow: String,
        #[command(flatten)]
        sock: Sock,
    },
    /// Delete the running node's flows: all, or those of `cookie=V/M`
    /// and/or `table=N`.
    DelFlows {
        /// `cookie=V/M`, `table=N`, comma-separated.
        spec: Option<String>,
        #[command(flatten)]
        sock: Sock,
    },
    /// Replace every flow of the running node with a flows file's (groups
    /// kept).
    ReplaceFlows {
        /// Flows file.
        file: PathBuf,
        #[command(flatten)]
        sock: Sock,
    },
    /// Print the running node's groups (`ovs-ofctl dump-groups` lines).
    DumpGroups {
        #[command(flatten)]
        sock: Sock,
    },
    /// Print live connections of every worker (`ovs-appctl
    /// dpctl/dump-conntrack` lines).
    DumpConntrack {
        /// Only this zone.
        zone: Option<u16>,
        #[command(flatten)]
        sock: Sock,
    },
    /// Delete live connections (of one zone) on every worker.
    FlushConntrack {
        /// Only this zone.
        zone: Option<u16>,
        #[command(flatten)]
        sock: Sock,
    },
    /// Print every worker's megaflows (`ovs-appctl dpctl/dump-flows`
    /// lines: masked match, packets, bytes, last use, datapath actions).
    DumpMegaflows {
        #[command(flatten)]
        sock: Sock,
    },
    /// Print the running node's counters.
    Stats {
        #[command(flatten)]
        sock: Sock,
    },
    /// Print the running node's ports.
    Ports {
        #[command(flatten)]
        sock: Sock,
    },
    /// Re-read the running node's flows/groups files and publish them.
    Reload {
        #[command(flatten)]
        sock: Sock,
    },
}

/// Options of the commands that talk to `flowpath run`.
#[derive(clap::Args)]
struct Sock {
    /// Control socket of `flowpath run`.
    #[arg(long, default_value = ctrl::run::config::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the answer as JSON (for scripts).
    #[arg(long)]
    json: bool,
}

/// Send `req`, print the answer's text (or JSON with `--json`).
fn ask(sock: &Sock, req: serde_json::Value) -> anyhow::Result<ExitCode> {
    let resp = ctrl::control::request(&sock.socket, &req)?;
    if sock.json {
        println!("{}", resp.get("json").unwrap_or(&serde_json::Value::Null));
    } else if let Some(t) = resp.get("text").and_then(|t| t.as_str()) {
        print!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flowpath: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    use ctrl::{load, replay, trace};
    match cli.cmd {
        Cmd::Replay {
            flows,
            groups,
            ports,
            packets,
            format,
            pcap_dir,
            cache,
        } => {
            let ports = load::ports(&ports)?;
            let p = load::load_named(&flows, groups.as_deref(), &ports.ports)?;
            let steps = load::steps(&packets, &ports)?;
            let opts = replay::ReplayOptions { cache };
            let results = replay::run(&p, &ports, &steps, &opts);
            if let Some(d) = pcap_dir {
                replay::write_pcaps(&d, &ports, &results)?;
            }
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&replay::to_json(&ports, &results))?
                ),
                Format::Text => print!("{}", replay::to_text(&results)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Trace {
            flows: None,
            in_port,
            packet,
            flow,
            sock,
            ..
        } => ask(
            &sock,
            json!({"cmd": "trace", "in_port": in_port, "packet": packet, "flow": flow}),
        ),
        Cmd::Trace {
            flows: Some(flows),
            groups,
            ports,
            in_port,
            packet,
            flow,
            steps,
            ..
        } => {
            let ports = load::ports(ports.as_deref().unwrap_or_default())?;
            let p = load::load_named(&flows, groups.as_deref(), &ports.ports)?;
            let prefix = match steps {
                Some(s) => load::steps(&s, &ports)?,
                None => Vec::new(),
            };
            let out = trace::trace(
                &p,
                &ports,
                &prefix,
                &in_port,
                packet.as_deref(),
                flow.as_deref(),
            )?;
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { flows, groups } => {
            let p = load::load(&flows, groups.as_deref())?;
            println!(
                "{}: {} flows, {} groups: ok",
                flows.display(),
                p.flows.len(),
                p.groups.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            config,
            stats_format,
            check,
        } => {
            if check {
                println!("{}", ctrl::run::check(&config)?);
                return Ok(ExitCode::SUCCESS);
            }
            let f = match stats_format {
                Format::Json => ctrl::run::StatsFormat::Json,
                Format::Text => ctrl::run::StatsFormat::Text,
            };
            ctrl::run::run(&config, f)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Compile {
            node,
            services,
            groups_out,
        } => {
            let node_path = node;
            let node = ctrl::config::NodeConfig::load(&node_path)?;
            let services = match (services.is_empty(), &node.services) {
                (false, _) => services,
                (true, Some(dir)) => vec![node_path.parent().unwrap_or(".".as_ref()).join(dir)],
                (true, None) => anyhow::bail!(
                    "no manifests: give --services or `services = \"DIR\"` in {}",
                    node_path.display()
                ),
            };
            let manifests = ctrl::config::Manifests::load(&services)?;
            let c = ctrl::compile::compile(&node, &manifests)?;
            for w in &c.warnings {
                eprintln!("flowpath: warning: {w}");
            }
            print!("{}", c.flows_text());
            match groups_out {
                Some(path) => std::fs::write(&path, c.groups_text())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                None => print!("{}", c.groups_text()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::DumpFlows {
            flows: Some(flows),
            table,
            ..
        } => {
            let p = load::load(&flows, None)?;
            print!("{}", load::dump_flows(&p, table));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::DumpFlows {
            flows: None,
            table,
            stats,
            sock,
        } => ask(
            &sock,
            json!({"cmd": "dump-flows", "table": table, "stats": stats}),
        ),
        Cmd::AddFlow { flow, sock } => ask(&sock, json!({"cmd": "add-flow", "flow": flow})),
        Cmd::DelFlows { spec, sock } => ask(&sock, json!({"cmd": "del-flows", "spec": spec})),
        Cmd::ReplaceFlows { file, sock } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            ask(
                &sock,
                json!({"cmd": "replace-flows", "flows": text, "file": file.display().to_string()}),
            )
        }
        Cmd::DumpGroups { sock } => ask(&sock, json!({"cmd": "dump-groups"})),
        Cmd::DumpConntrack { zone, sock } => {
            ask(&sock, json!({"cmd": "dump-conntrack", "zone": zone}))
        }
        Cmd::FlushConntrack { zone, sock } => {
            ask(&sock, json!({"cmd": "flush-conntrack", "zone": zone}))
        }
        Cmd::DumpMegaflows { sock } => ask(&sock, json!({"cmd": "dump-megaflows"})),
        Cmd::Stats { sock } => ask(&sock, json!({"cmd": "stats"})),
        Cmd::Ports { sock } => ask(&sock, json!({"cmd": "ports"})),
        Cmd::Reload { sock } => ask(&sock, json!({"cmd": "reload"})),
    }
}
