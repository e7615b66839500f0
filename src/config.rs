//! Configuration: flags, with environment overrides passed in as a map (never read here from
//! the process), and defaults that start a working tracker with no flags at all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Address to listen on [env: RUNSTREAM_LISTEN]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Folder for the embedded log, views and blobs; created on first start [env: RUNSTREAM_DATA]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Event log URL (default sqlite://DATA/log.db) [env: RUNSTREAM_LOG_URL]
    #[arg(long = "log")]
    log_url: Option<String>,
    /// Views URL (default: the current generation under DATA/views) [env: RUNSTREAM_VIEWS_URL]
    #[arg(long = "views")]
    views_url: Option<String>,
    /// Blob store URL (default file://DATA/blobs) [env: RUNSTREAM_BLOBS_URL]
    #[arg(long = "blobs")]
    blobs_url: Option<String>,
    /// Partitions of the events topic, used when the log is created [env: RUNSTREAM_PARTITIONS]
    #[arg(long)]
    partitions: Option<u32>,
    /// A stable name for this process in the projector group (Kafka's group.instance.id): a
    /// projector restarted under the same name takes its partitions back at once
    /// [env: RUNSTREAM_PROJECTOR_ID]
    #[arg(long)]
    projector_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub log_url: String,
    views_url: Option<String>,
    pub blobs_url: String,
    pub partitions: u32,
    /// Admin token to register on start (RUNSTREAM_ADMIN_TOKEN), for scripted set-ups.
    pub admin_token: Option<String>,
    /// This projector's stable name in its group, if it has one.
    pub projector_id: Option<String>,
}

impl Config {
    pub fn resolve(args: ConfigArgs, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let listen = match args.listen {
            Some(l) => l,
            None => get("RUNSTREAM_LISTEN")
                .as_deref()
                .unwrap_or("127.0.0.1:8080")
                .parse()
                .context("RUNSTREAM_LISTEN is not an address like 127.0.0.1:8080")?,
        };
        let data = args
            .data
            .or_else(|| get("RUNSTREAM_DATA").map(PathBuf::from))
            .unwrap_or_else(|| "runstream-data".into());
        let data_s = data.to_string_lossy().to_string();
        let log_url = args
            .log_url
            .or_else(|| get("RUNSTREAM_LOG_URL"))
            .unwrap_or_else(|| format!("sqlite://{data_s}/log.db"));
        let views_url = args.views_url.or_else(|| get("RUNSTREAM_VIEWS_URL"));
        let blobs_url = args
            .blobs_url
            .or_else(|| get("RUNSTREAM_BLOBS_URL"))
            .unwrap_or_else(|| format!("file://{data_s}/blobs"));
        let partitions = match args.partitions {
            Some(p) => p,
            None => get("RUNSTREAM_PARTITIONS")
                .map(|p| p.parse())
                .transpose()
                .context("RUNSTREAM_PARTITIONS")?
                .unwrap_or(4),
        };
        if partitions == 0 {
            bail!("partitions must be at least 1");
        }
        let projector_id = args.projector_id.or_else(|| get("RUNSTREAM_PROJECTOR_ID"));
        if let Some(id) = &projector_id {
            runstream_log::check_member_name(id).context("projector id (--projector-id, RUNSTREAM_PROJECTOR_ID)")?;
        }
        let admin_token = get("RUNSTREAM_ADMIN_TOKEN");
        if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            bail!("RUNSTREAM_ADMIN_TOKEN must be at least 16 characters long");
        }
        Ok(Self {
            listen,
            data,
            log_url,
            views_url,
            blobs_url,
            partitions,
            admin_token,
            projector_id,
        })
    }

    fn views_dir(&self) -> PathBuf {
        self.data.join("views")
    }

    fn current_generation(&self) -> anyhow::Result<Option<String>> {
        let pointer = self.views_dir().join("CURRENT");
        match std::fs::read_to_string(&pointer) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", pointer.display())),
        }
    }

    /// The views URL given by flag or environment, if any.
    pub fn views_url(&self) -> Option<&str> {
        self.views_url.as_deref()
    }

    /// The views to serve: the configured URL, or the current generation under DATA/views
    /// (the first one is created on first start).
    pub fn current_views_url(&self) -> anyhow::Result<String> {
        if let Some(u) = &self.views_url {
            return Ok(u.clone());
        }
        let generation = match self.current_generation()? {
            Some(g) => g,
            None => {
                let g = "gen-000001".to_string();
                self.switch_views_generation(&g)?;
                g
            }
        };
        Ok(format!(
            "sqlite://{}/{generation}.db",
            self.views_dir().to_string_lossy()
        ))
    }

    /// A fresh generation for `rebuild`, one past the newest under DATA/views.
    pub fn next_views_generation(&self) -> anyhow::Result<(String, String)> {
        if self.views_url.is_some() {
            bail!("rebuild manages generations under --data; do not pass --views");
        }
        let dir = self.views_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut newest = 0u32;
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().to_string();
            if let Some(n) = name
                .strip_prefix("gen-")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse().ok())
            {
                newest = newest.max(n);
            }
        }
        let g = format!("gen-{:06}", newest + 1);
        let url = format!("sqlite://{}/{g}.db", dir.to_string_lossy());
        Ok((g, url))
    }

    /// Points readers at a generation: write the pointer beside, then rename over (atomic).
    pub fn switch_views_generation(&self, generation: &str) -> anyhow::Result<()> {
        let dir = self.views_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join("CURRENT.tmp");
        std::fs::write(&tmp, format!("{generation}\n"))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join("CURRENT"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ConfigArgs {
        ConfigArgs {
            listen: None,
            data: None,
            log_url: None,
            views_url: None,
            blobs_url: None,
            partitions: None,
            projector_id: None,
        }
    }

    #[test]
    fn defaults_need_no_flags() {
        let c = Config::resolve(args(), &HashMap::new()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.log_url, "sqlite://runstream-data/log.db");
        assert_eq!(c.blobs_url, "file://runstream-data/blobs");
        assert_eq!(c.partitions, 4);
    }

    #[test]
    fn environment_overrides_defaults_and_flags_override_both() {
        let env = HashMap::from([
            ("RUNSTREAM_DATA".to_string(), "/srv/rs".to_string()),
            ("RUNSTREAM_LISTEN".to_string(), "0.0.0.0:9000".to_string()),
        ]);
        let c = Config::resolve(args(), &env).unwrap();
        assert_eq!(c.log_url, "sqlite:///srv/rs/log.db");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        let mut a = args();
        a.listen = Some("127.0.0.1:1".parse().unwrap());
        assert_eq!(Config::resolve(a, &env).unwrap().listen.to_string(), "127.0.0.1:1");
        let short = HashMap::from([("RUNSTREAM_ADMIN_TOKEN".to_string(), "short".to_string())]);
        assert!(Config::resolve(args(), &short).is_err());
    }

    #[test]
    fn a_projector_id_is_a_plain_name() {
        assert_eq!(Config::resolve(args(), &HashMap::new()).unwrap().projector_id, None);
        let env = HashMap::from([("RUNSTREAM_PROJECTOR_ID".to_string(), "project-2".to_string())]);
        assert_eq!(
            Config::resolve(args(), &env).unwrap().projector_id.as_deref(),
            Some("project-2")
        );
        let mut a = args();
        a.projector_id = Some("bad name".into());
        let e = Config::resolve(a, &env).unwrap_err();
        assert!(format!("{e:#}").contains("projector id"), "{e:#}");
    }
}
