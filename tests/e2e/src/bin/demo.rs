//! `cargo run -p e2e --bin demo` (what `make run` starts when no real tenant is configured):
//! the real apphost running the connector guest, wired to the fake Microsoft 365 and the fake
//! PBX (master + one slave) with the same few hundred licensed people on both sides. Teams
//! presence changes are driven through the fake's control API every few seconds, and what the
//! PBX shows for those users is printed next to the host's log. Ctrl-C stops everything.
//!
//! Flags: `--users N` (300), `--every-ms MS` (2000), `--seed S` (7).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use e2e::people::{Person, Rng, match_by_alias, people};
use e2e::{M365Options, PbxOptions, Stack, StackOptions, TeamsAccount};

/// The Teams states the demo cycles through (availability, activity): the F1 mapping table's
/// rows, so each one should show up as a distinct PBX presence once sync is implemented.
const TEAMS_STATES: &[(&str, &str)] = &[
    ("Available", "Available"),
    ("Busy", "InACall"),
    ("Busy", "InAConferenceCall"),
    ("Busy", "InAMeeting"),
    ("Busy", "Busy"),
    ("DoNotDisturb", "Presenting"),
    ("DoNotDisturb", "DoNotDisturb"),
    ("BeRightBack", "BeRightBack"),
    ("Away", "Away"),
    ("Offline", "OffWork"),
    ("Available", "Available"),
];

const SERVICE_USER: &str = "teams.sync@contoso.onmicrosoft.com";
const SERVICE_PASSWORD: &str = "Demo&Pass+word 1";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn parse_args() -> Result<(usize, u64, u64)> {
    let (mut users, mut every_ms, mut seed) = (300usize, 2000u64, 7u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--users" => users = val()?.parse()?,
            "--every-ms" => every_ms = val()?.parse()?,
            "--seed" => seed = val()?.parse()?,
            "-h" | "--help" => {
                println!("demo [--users N] [--every-ms MS] [--seed S]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    Ok((users, every_ms.max(100), seed))
}

/// Prints lines appended to `path` since the last call, prefixed.
struct Follow {
    path: PathBuf,
    offset: u64,
}

impl Follow {
    fn print_new(&mut self, prefix: &str) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut reader = BufReader::new(f);
        let mut line = String::new();
        while let Ok(n) = reader.read_line(&mut line) {
            // Only whole lines; a half-written one is printed next time.
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            self.offset += n as u64;
            print!("{prefix}{line}");
            line.clear();
        }
    }
}

/// The connector's presence item for a user as the PBX stores it, in one word.
fn pbx_view(stack: &Stack, guid: &str) -> String {
    let Ok(p) = stack.pbx().presence(guid) else {
        return "?".into();
    };
    let items = p["stored"].as_array().cloned().unwrap_or_default();
    match items.iter().find(|i| i["contact"] == "teams:") {
        Some(i) => format!(
            "{} {}",
            i["activity"].as_str().unwrap_or(""),
            i["note"].as_str().unwrap_or("")
        )
        .trim()
        .to_string(),
        None => "no Teams item (online)".into(),
    }
}

fn main() -> Result<()> {
    let (count, every_ms, seed) = parse_args()?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let people = people(count, seed);
    let mut rng = Rng::new(seed.wrapping_add(1));
    println!("demo: building and starting fake Microsoft 365, apphost and the fake PBX ...");
    let stack = Stack::start(StackOptions {
        m365: Some(M365Options {
            accounts: vec![TeamsAccount::Password {
                name: "teams1".into(),
                username: SERVICE_USER.into(),
                password: SERVICE_PASSWORD.into(),
            }],
            users: people.iter().map(Person::m365_user).collect(),
            ..Default::default()
        }),
        pbx: Some(PbxOptions {
            slaves: vec!["slave".into()],
            users: 0,
            licences: Some(count as u32),
            // Every fifth person lives on the slave, so routing to the user's PBX shows too.
            extra_users: people
                .iter()
                .enumerate()
                .map(|(i, p)| p.pbx_user(if i % 5 == 4 { "slave" } else { "master" }))
                .collect(),
            ..Default::default()
        }),
        // Matched as many sites do: PBX Name (mail alias) = UPN without its domain.
        settings: match_by_alias(),
        log_filter: "info".into(),
        ansi_logs: true,
        ..Default::default()
    })?;
    let connector = stack.connector();
    println!(
        "\n================================================================================\n\
         DEMO against FAKES: no real Microsoft 365 tenant and no real PBX are involved.\n\
         {count} people exist in the fake tenant and in the fake PBX (master + slave), all licensed.\n\
         \n  connector status   {}/status\n  host metrics       {}/metrics\n  host control       {}/instances\n\
         \x20 fake M365 control  {}/control/tenant   (Graph + login at {})\n\
         \x20 fake PBX control   {}/status\n  logs and config    {}\n\
         \nTeams presence changes every {every_ms} ms; the PBX's view follows once the connector\n\
         syncs it. Ctrl-C stops everything.\n\
         ================================================================================\n",
        connector.url,
        stack.host_url(),
        stack.host().url,
        stack.m365().control_url,
        stack.m365().url,
        stack.pbx().url,
        stack.dir().display(),
    );
    let mut host_log = Follow {
        path: stack.dir().join("apphost.log"),
        offset: 0,
    };
    // What the PBX showed last for each user the demo changed, to print only changes.
    let mut shown: HashMap<String, String> = HashMap::new();
    let mut changed: Vec<usize> = Vec::new();
    let mut next_change = Instant::now() + Duration::from_millis(every_ms);
    let mut last_summary = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        host_log.print_new("host | ");
        if let Err(e) = stack.check_running() {
            eprintln!("demo: {e:#}");
            break;
        }
        if Instant::now() >= next_change {
            next_change += Duration::from_millis(every_ms);
            let who = rng.below(people.len());
            let (availability, activity) = TEAMS_STATES[rng.below(TEAMS_STATES.len())];
            let p = &people[who];
            // Remember what the PBX shows now, so only the change the sync makes is printed.
            shown.insert(p.guid.clone(), pbx_view(&stack, &p.guid));
            match stack
                .m365()
                .set_teams_presence(&p.email, availability, activity)
            {
                Ok(()) => println!(
                    "DEMO | Teams change:  {:<28} -> {availability}/{activity}",
                    p.name
                ),
                Err(e) => println!("DEMO | Teams change for {} failed: {e:#}", p.name),
            }
            changed.retain(|&i| i != who);
            changed.push(who);
            if changed.len() > 20 {
                changed.remove(0);
            }
        }
        for &i in &changed {
            let p = &people[i];
            let view = pbx_view(&stack, &p.guid);
            if shown.get(&p.guid) != Some(&view) {
                println!("DEMO | PBX now shows:  {:<28} -> {view}", p.name);
                shown.insert(p.guid.clone(), view);
            }
        }
        if last_summary.elapsed() > Duration::from_secs(15) {
            last_summary = Instant::now();
            if let Ok(st) = connector.status() {
                let pbx: Vec<String> = st
                    .pbx
                    .iter()
                    .map(|c| {
                        format!(
                            "{}{} ({} users)",
                            c.pbx.as_deref().unwrap_or("?"),
                            if c.logged_in { "" } else { " not logged in" },
                            c.users
                        )
                    })
                    .collect();
                let accounts: Vec<String> = st
                    .accounts
                    .iter()
                    .map(|a| format!("{} {}", a.name, a.state))
                    .collect();
                println!(
                    "DEMO | status: PBX {} | Teams accounts {}",
                    pbx.join(", "),
                    accounts.join(", ")
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\ndemo: stopping ...");
    drop(stack);
    println!("demo: stopped.");
    Ok(())
}
