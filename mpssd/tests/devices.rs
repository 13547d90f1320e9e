//! The contract the virtio backends plug into, held by a recording
//! `DeviceSet` under a real supervisor and a micemu card: devices are added
//! at adoption, removed before every reset and added again after it,
//! removed when the daemon stops; their counters reach the status and the
//! console's last output reaches the crash bundle.

mod common;

use std::sync::{Arc, Mutex};

use common::{Fleet, HANG};
use libmic::{Card, MicRoot};
use micemu::Fault;
use mpssd::config::Config;
use mpssd::devices::{BoxFuture, DeviceContext, DeviceError, DeviceSet, DeviceView};
use mpssd::shared::{CardHandle, Shared};
use mpssd::supervisor::Supervisor;
use mpssd_proto::{DeviceStatus, EventKind, SupervisorState as S};
use tokio::sync::{oneshot, watch};

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    added: Mutex<u64>,
}

struct Set(Arc<Recorder>, Option<Card>);

impl DeviceSet for Set {
    fn add<'a>(&'a mut self, ctx: &'a DeviceContext) -> BoxFuture<'a, Result<Vec<String>, DeviceError>> {
        Box::pin(async move {
            let state = ctx.card.state().map_or("?", libmic::MicState::as_str);
            self.0.calls.lock().unwrap().push(format!("add {state}"));
            *self.0.added.lock().unwrap() += 1;
            self.1 = Some(ctx.card.clone());
            assert!(ctx.run_dir.ends_with("run/mpssd/mic0"));
            Ok(vec!["console".into()])
        })
    }

    fn remove<'a>(&'a mut self, _why: &'a str) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let card = self.1.as_ref().expect("remove after add");
            let state = card.state().map_or("?", libmic::MicState::as_str);
            self.0.calls.lock().unwrap().push(format!("remove {state}"));
            vec!["console".into()]
        })
    }

    fn view(&self) -> Arc<dyn DeviceView> {
        Arc::new(View(Arc::clone(&self.0)))
    }
}

struct View(Arc<Recorder>);

impl DeviceView for View {
    fn devices(&self) -> Vec<DeviceStatus> {
        vec![DeviceStatus {
            kind: "console".into(),
            target: "/dev/pts/99".into(),
            state: "up".into(),
            counters: [("adds".to_owned(), *self.0.added.lock().unwrap())].into(),
        }]
    }

    fn console_tail(&self, max: usize) -> Option<Vec<u8>> {
        Some(b"login: the last words\n"[..max.min(22)].to_vec())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_follow_the_card_through_a_crash() {
    let fleet = Fleet::start(1);
    let root = MicRoot::new(fleet.root());
    let cfg = Config::parse(
        std::path::Path::new("mpssd.toml"),
        "[defaults]\ncrash_backoff = \"50ms\"\ncrash_backoff_max = \"50ms\"\n",
    )
    .unwrap();
    let shared = Arc::new(Shared::new(root.clone(), "mpssd.toml".into(), cfg));
    let rec = Arc::new(Recorder::default());
    let set = Box::new(Set(Arc::clone(&rec), None));
    let view = set.view();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (adopted_tx, adopted_rx) = oneshot::channel();
    let (sup, status) = Supervisor::new(root.card_by_id(0), Arc::clone(&shared), set, stop_rx, adopted_tx);
    shared
        .cards
        .set([(0, CardHandle { status, view })].into())
        .unwrap();
    let mut events = shared.subscribe();
    let task = tokio::spawn(sup.run());
    tokio::time::timeout(HANG, adopted_rx).await.unwrap().unwrap();
    assert_eq!(*rec.calls.lock().unwrap(), ["add offline"]);

    let next = |events: &mut tokio::sync::broadcast::Receiver<mpssd_proto::Event>, want: S| {
        let mut events = events.resubscribe();
        async move {
            tokio::time::timeout(HANG, async {
                loop {
                    let e = events.recv().await.unwrap();
                    if matches!(e.kind, EventKind::Supervisor { to, .. } if to == want) {
                        return e;
                    }
                }
            })
            .await
            .unwrap()
        }
    };
    let running = next(&mut events, S::Running);
    let f = fleet.root().to_owned();
    tokio::task::spawn_blocking(move || {
        let c = MicRoot::new(&f).card_by_id(0);
        c.boot_with(&libmic::BootRequest::defaults_for(&c), None).unwrap();
        c.wait_os_up(Some(HANG)).unwrap();
    })
    .await
    .unwrap();
    running.await;
    let snap = shared.cards()[&0].snapshot();
    assert_eq!(snap.devices[0].counters["adds"], 1);

    let back = next(&mut events, S::Backoff);
    fleet.inject(0, &Fault::Panic("x".into()));
    back.await;
    assert_eq!(
        *rec.calls.lock().unwrap(),
        ["add offline", "remove shutting_down", "add offline"]
    );
    let bundle = shared.cards()[&0].snapshot().last_crash.unwrap().bundle.unwrap();
    let console = std::fs::read_to_string(std::path::Path::new(&bundle).join("console.log")).unwrap();
    assert_eq!(console, "login: the last words\n");

    let stopped = next(&mut events, S::Stopped);
    stop_tx.send(true).unwrap();
    stopped.await;
    tokio::time::timeout(HANG, task).await.unwrap().unwrap();
    let calls = rec.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls[3].starts_with("remove "), "{calls:?}");
}
