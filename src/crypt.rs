//! age encryption of treasure files: recipients, identities, and streaming encrypt/decrypt.
//!
//! Treasure blobs are binary age files (readable by `age -d` and `rage -d`). Encryption only
//! needs the recipients listed in mirror.yaml; decryption needs an identity, which is loaded at
//! most once per process (a passphrase-protected identity costs one scrypt run, not one per
//! file) and only when something actually has to be decrypted.

use std::cell::{OnceCell, RefCell};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use age::secrecy::{ExposeSecret, SecretString};
use anyhow::{bail, Context, Result};

/// Every binary age file starts with this line.
pub const MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// age's STREAM parameters: 64 KiB plaintext chunks, each with a 16-byte Poly1305 tag.
const CHUNK: u64 = 64 * 1024;
const TAG: u64 = 16;

pub type Recipient = Box<dyn age::Recipient + Send>;
pub type Identity = Box<dyn age::Identity + Send + Sync>;

/// Parse one recipient: an age X25519 recipient (`age1…`) or an OpenSSH public key line
/// (`ssh-ed25519 …`, `ssh-rsa …`).
pub fn parse_recipient(text: &str) -> std::result::Result<Recipient, String> {
    let t = text.trim();
    if t.starts_with("age1") {
        t.parse::<age::x25519::Recipient>()
            .map(|r| Box::new(r) as Recipient)
            .map_err(|e| format!("'{t}' is not a valid age recipient: {e}"))
    } else if t.starts_with("ssh-") {
        t.parse::<age::ssh::Recipient>()
            .map(|r| Box::new(r) as Recipient)
            .map_err(|e| format!("'{t}' is not a usable ssh recipient: {e:?}"))
    } else {
        Err(format!(
            "'{t}' is not a recipient: expected an age public key (age1…) or an ssh-ed25519 / ssh-rsa public key"
        ))
    }
}

/// The default identity file: `$XDG_CONFIG_HOME/mirror/identity.txt` (or `~/.config/…`).
pub fn default_identity_path() -> Result<PathBuf> {
    Ok(crate::host::xdg_dir("XDG_CONFIG_HOME", ".config")?
        .join("mirror")
        .join("identity.txt"))
}

/// Create a new X25519 identity at `path` (mode 0600, never overwriting) and return its
/// recipient.
pub fn generate_identity(path: &Path) -> Result<String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("could not create {}", parent.display()))?;
    }
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} already exists; an identity is never overwritten (use --out for a new file)",
                    path.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("could not create {}", path.display()))
            }
        })?;
    let created = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text = format!(
        "# created: {created} by mirror\n# public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    );
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("could not write {}", path.display()))?;
    Ok(recipient)
}

/// Where the identity was found, for messages.
#[derive(Debug, Clone)]
pub struct IdentitySource {
    pub path: PathBuf,
    /// `--identity`, `MIRROR_IDENTITY`, `mirror.yaml`, or `default`.
    pub origin: &'static str,
}

/// Asks for the passphrase of an encrypted identity file (the CLI prompts on the terminal).
pub type PassphrasePrompt = dyn Fn(&Path) -> Result<SecretString>;

/// Told the path each time a passphrase-protected identity is unlocked.
pub type UnlockNotice = dyn Fn(&Path);

/// The identities that decrypt treasure blobs, loaded on first use and then kept.
pub struct Keys {
    source: Option<IdentitySource>,
    prompt: Option<Box<PassphrasePrompt>>,
    /// Told each time a passphrase-protected file is unlocked (the CLI prints it).
    on_unlock: Option<Box<UnlockNotice>>,
    loaded: OnceCell<std::result::Result<Loaded, String>>,
    /// Made by [`Keys::withheld`]: decryption is refused on purpose.
    withheld: bool,
}

struct Loaded {
    identities: Vec<Identity>,
    /// Public recipients of the identities, where they can be derived.
    recipients: Vec<String>,
}

impl Keys {
    /// Resolve the identity file: `flag` (`--identity`), then `MIRROR_IDENTITY`, then
    /// `configured` (`encryption.identity` in mirror.yaml, relative to `root`), then the
    /// default path.
    pub fn resolve(flag: Option<&Path>, configured: Option<&Path>, root: &Path) -> Keys {
        let env = std::env::var_os("MIRROR_IDENTITY").filter(|v| !v.is_empty());
        let source = if let Some(p) = flag {
            Some(IdentitySource {
                path: p.to_owned(),
                origin: "--identity",
            })
        } else if let Some(p) = env {
            Some(IdentitySource {
                path: PathBuf::from(p),
                origin: "MIRROR_IDENTITY",
            })
        } else if let Some(p) = configured {
            Some(IdentitySource {
                path: root.join(p),
                origin: "mirror.yaml",
            })
        } else {
            default_identity_path().ok().map(|path| IdentitySource {
                path,
                origin: "default",
            })
        };
        Keys {
            source,
            prompt: None,
            on_unlock: None,
            loaded: OnceCell::new(),
            withheld: false,
        }
    }

    /// Keys that never decrypt, whatever is configured: for read-only views (the dashboard)
    /// that must not produce plaintext. Every decryption fails with `reason`.
    pub fn withheld(reason: &str) -> Keys {
        let loaded = OnceCell::new();
        // A fresh cell cannot be set already.
        let _ = loaded.set(Err(reason.to_owned()));
        Keys {
            source: None,
            prompt: None,
            on_unlock: None,
            loaded,
            withheld: true,
        }
    }

    /// Whether these keys refuse to decrypt by design ([`Keys::withheld`]).
    pub fn is_withheld(&self) -> bool {
        self.withheld
    }

    pub fn with_prompt(mut self, prompt: Box<PassphrasePrompt>) -> Keys {
        self.prompt = Some(prompt);
        self
    }

    pub fn with_unlock_notice(mut self, notice: Box<UnlockNotice>) -> Keys {
        self.on_unlock = Some(notice);
        self
    }

    pub fn source(&self) -> Option<&IdentitySource> {
        self.source.as_ref()
    }

    fn load(&self) -> Result<&Loaded> {
        let loaded = self.loaded.get_or_init(|| {
            let Some(source) = &self.source else {
                return Err(
                    "no identity configured (pass --identity FILE or set MIRROR_IDENTITY)".into(),
                );
            };
            load_identity_file(
                &source.path,
                self.prompt.as_deref(),
                self.on_unlock.as_deref(),
            )
            .map_err(|e| {
                format!(
                    "could not load the identity {} (from {}): {e:#}",
                    source.path.display(),
                    source.origin
                )
            })
        });
        loaded.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn identities(&self) -> Result<&[Identity]> {
        Ok(&self.load()?.identities)
    }

    /// The public recipients of the loaded identities (for `mirror key show`).
    pub fn recipients(&self) -> Result<&[String]> {
        Ok(&self.load()?.recipients)
    }

    /// Decrypt an age stream with these identities.
    pub fn decrypt<R: BufRead>(&self, ciphertext: R) -> Result<impl Read> {
        self.open(ciphertext).map_err(|e| match e {
            DecryptFailure::Identity(m) | DecryptFailure::Content(m) => anyhow::anyhow!(m),
        })
    }

    /// [`Keys::decrypt`], telling a key problem (no identity, a wrong one) from a damaged
    /// file: only the first can be fixed by giving another identity.
    pub fn open<R: BufRead>(
        &self,
        ciphertext: R,
    ) -> std::result::Result<impl Read, DecryptFailure> {
        let identities = self
            .identities()
            .map_err(|e| DecryptFailure::Identity(format!("{e:#}")))?;
        let decryptor = age::Decryptor::new_buffered(ciphertext)
            .map_err(|e| DecryptFailure::Content(format!("not a valid age file: {e}")))?;
        decryptor
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => DecryptFailure::Identity(format!(
                    "the identity {} cannot decrypt it (it was encrypted to other recipients)",
                    self.source
                        .as_ref()
                        .map(|s| s.path.display().to_string())
                        .unwrap_or_default()
                )),
                other => DecryptFailure::Content(format!("could not decrypt: {other}")),
            })
    }
}

/// Why an age file could not be opened.
#[derive(Debug)]
pub enum DecryptFailure {
    /// No usable identity, or not one of the file's recipients.
    Identity(String),
    /// The file itself is damaged.
    Content(String),
}

fn is_age_file(data: &[u8]) -> bool {
    data.starts_with(MAGIC) || data.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
}

fn load_identity_file(
    path: &Path,
    prompt: Option<&PassphrasePrompt>,
    on_unlock: Option<&UnlockNotice>,
) -> Result<Loaded> {
    let data = std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
    let passphrase = || -> Result<SecretString> {
        if let Some(p) = std::env::var_os("MIRROR_PASSPHRASE") {
            let p = p
                .into_string()
                .map_err(|_| anyhow::anyhow!("MIRROR_PASSPHRASE is not valid UTF-8"))?;
            return Ok(SecretString::from(p));
        }
        match prompt {
            Some(ask) => ask(path),
            None => bail!("it is passphrase-protected: set MIRROR_PASSPHRASE or run on a terminal"),
        }
    };
    // An identity file encrypted with a passphrase (`age -p`): one scrypt run, here, once.
    let text = if is_age_file(&data) {
        let pass = passphrase()?;
        if let Some(notice) = on_unlock {
            notice(path);
        }
        let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(&data[..]))
            .map_err(|e| anyhow::anyhow!("not a valid age file: {e}"))?;
        if !decryptor.is_scrypt() {
            bail!("it is an age file encrypted to recipients, not to a passphrase");
        }
        let scrypt = age::scrypt::Identity::new(pass);
        let mut reader = decryptor
            .decrypt(std::iter::once(&scrypt as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                    anyhow::anyhow!("wrong passphrase")
                }
                other => anyhow::anyhow!("could not unlock it: {other}"),
            })?;
        let mut plain = Vec::new();
        reader.read_to_end(&mut plain)?;
        plain
    } else {
        data
    };
    let as_str = std::str::from_utf8(&text).context("not a text file")?;
    if as_str.contains("-----BEGIN OPENSSH PRIVATE KEY-----")
        || as_str.contains("-----BEGIN RSA PRIVATE KEY-----")
    {
        let mut identity =
            age::ssh::Identity::from_buffer(as_str.as_bytes(), Some(path.display().to_string()))
                .context("not a usable ssh private key")?;
        if let age::ssh::Identity::Encrypted(key) = &identity {
            let pass = passphrase()?;
            if let Some(notice) = on_unlock {
                notice(path);
            }
            let key = key
                .decrypt(pass)
                .map_err(|_| anyhow::anyhow!("wrong passphrase for the ssh key"))?;
            identity = age::ssh::Identity::Unencrypted(key);
        }
        if let age::ssh::Identity::Unsupported(_) = identity {
            bail!("this kind of ssh key is not supported by age (use ed25519 or rsa)");
        }
        let recipients = age::ssh::Recipient::try_from(identity.clone())
            .map(|r| vec![r.to_string()])
            .unwrap_or_default();
        return Ok(Loaded {
            identities: vec![Box::new(identity)],
            recipients,
        });
    }
    let recipients = as_str
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
        .filter_map(|l| l.parse::<age::x25519::Identity>().ok())
        .map(|i| i.to_public().to_string())
        .collect();
    let identities = age::IdentityFile::from_buffer(as_str.as_bytes())
        .context("not an age identity file")?
        .into_identities()
        .map_err(|e| anyhow::anyhow!("unusable identity: {e}"))?;
    if identities.is_empty() {
        bail!("it holds no identity");
    }
    Ok(Loaded {
        identities,
        recipients,
    })
}

/// Encrypts to a fixed recipient list.
pub struct Encryptor {
    recipients: Vec<Recipient>,
}

impl Encryptor {
    pub fn new(recipients: Vec<Recipient>) -> Encryptor {
        Encryptor { recipients }
    }

    /// A reader yielding the age ciphertext of `plain` (exactly `size` bytes), and the
    /// ciphertext's exact length, known before any of it is read — so the blob header can be
    /// written first and the file streamed through in 64 KiB chunks.
    pub fn encrypting_reader<R: Read>(&self, plain: R, size: u64) -> Result<(u64, impl Read)> {
        let encryptor = age::Encryptor::with_recipients(
            self.recipients
                .iter()
                .map(|r| r.as_ref() as &dyn age::Recipient),
        )
        .map_err(|e| anyhow::anyhow!("could not set up encryption: {e}"))?;
        let buffer = SharedBuf::default();
        let writer = encryptor.wrap_output(buffer.clone())?;
        // Header and nonce are written by now; the payload size follows from age's STREAM
        // format: each (possibly empty, for an empty file) chunk gains one tag.
        let head = buffer.0.borrow().len() as u64;
        let chunks = size.div_ceil(CHUNK).max(1);
        let total = head + size + chunks * TAG;
        Ok((
            total,
            EncryptingReader {
                plain,
                writer: Some(writer),
                buffer,
                pos: 0,
                produced: 0,
                total,
                scratch: vec![0; CHUNK as usize],
            },
        ))
    }
}

#[derive(Clone, Default)]
struct SharedBuf(Rc<RefCell<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Pulls plaintext through age's writer-side encryptor, one chunk at a time.
struct EncryptingReader<R> {
    plain: R,
    writer: Option<age::stream::StreamWriter<SharedBuf>>,
    buffer: SharedBuf,
    pos: usize,
    produced: u64,
    total: u64,
    scratch: Vec<u8>,
}

impl<R: Read> Read for EncryptingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let buf = self.buffer.0.borrow();
                if self.pos < buf.len() {
                    let n = out.len().min(buf.len() - self.pos);
                    out[..n].copy_from_slice(&buf[self.pos..self.pos + n]);
                    self.pos += n;
                    self.produced += n as u64;
                    return Ok(n);
                }
            }
            self.buffer.0.borrow_mut().clear();
            self.pos = 0;
            let Some(writer) = self.writer.as_mut() else {
                if self.produced != self.total {
                    return Err(io::Error::other(format!(
                        "ciphertext length {} differs from the predicted {}",
                        self.produced, self.total
                    )));
                }
                return Ok(0);
            };
            let n = self.plain.read(&mut self.scratch)?;
            if n == 0 {
                // `finish` writes the last chunk; without it the file would not decrypt.
                if let Some(w) = self.writer.take() {
                    w.finish()?;
                }
            } else {
                writer.write_all(&self.scratch[..n])?;
            }
        }
    }
}

/// Compare two streams for equality without holding either whole.
pub fn same_stream(mut a: impl Read, mut b: impl Read) -> io::Result<bool> {
    let mut x = vec![0u8; CHUNK as usize];
    let mut y = vec![0u8; CHUNK as usize];
    loop {
        let n = read_full(&mut a, &mut x)?;
        let m = read_full(&mut b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Buffer a reader for age's header parser.
pub fn buffered<R: Read>(r: R) -> BufReader<R> {
    BufReader::with_capacity(64 * 1024, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(size: usize) {
        let identity = age::x25519::Identity::generate();
        let enc = Encryptor::new(vec![Box::new(identity.to_public())]);
        let plain: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let (total, reader) = enc.encrypting_reader(&plain[..], size as u64).unwrap();
        let mut cipher = Vec::new();
        let mut reader = reader;
        reader.read_to_end(&mut cipher).unwrap();
        assert_eq!(cipher.len() as u64, total, "predicted length for {size}");
        assert!(cipher.starts_with(MAGIC));
        let keys = Keys {
            source: None,
            prompt: None,
            on_unlock: None,
            loaded: OnceCell::from(Ok(Loaded {
                identities: vec![Box::new(identity)],
                recipients: Vec::new(),
            })),
            withheld: false,
        };
        let mut back = Vec::new();
        keys.decrypt(&cipher[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, plain);
    }

    #[test]
    fn ciphertext_length_is_predicted_exactly_at_chunk_edges() {
        for size in [0, 1, 65535, 65536, 65537, 2 * 65536, 3 * 65536 + 5] {
            roundtrip(size);
        }
    }

    #[test]
    fn recipients_parse_or_explain() {
        let id = age::x25519::Identity::generate();
        assert!(parse_recipient(&id.to_public().to_string()).is_ok());
        assert!(parse_recipient("age1nope").is_err());
        assert!(matches!(parse_recipient("hello"), Err(e) if e.contains("not a recipient")));
    }
}
