//! The producing modules of RansomEye and their fixed names.

/// A producing module of RansomEye.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Module {
    Core,
    Dpi,
    LinuxAgent,
    WindowsAgent,
}

impl Module {
    pub const ALL: [Module; 4] = [Module::Core, Module::Dpi, Module::LinuxAgent, Module::WindowsAgent];

    /// Short name used in sockets, schemas and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Module::Core => "core",
            Module::Dpi => "dpi",
            Module::LinuxAgent => "linux_agent",
            Module::WindowsAgent => "windows_agent",
        }
    }

    pub fn from_name(name: &str) -> Option<Module> {
        Module::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn description(self) -> &'static str {
        match self {
            Module::Core => "Core Engine",
            Module::Dpi => "DPI probe",
            Module::LinuxAgent => "Linux agent",
            Module::WindowsAgent => "Windows agent relay (ETW telemetry forwarded onto this host)",
        }
    }

    /// The schema holding this module's tables.
    pub fn schema(self) -> &'static str {
        self.name()
    }

    /// The OS account the packaged module runs as; its uid is the one the
    /// lane admits by SO_PEERCRED.
    pub fn os_identity(self) -> &'static str {
        match self {
            Module::Core => "ransomeye-core",
            Module::Dpi => "ransomeye-dpi",
            Module::LinuxAgent => "ransomeye-linux-agent",
            Module::WindowsAgent => "ransomeye-windows-relay",
        }
    }

    /// The OS identity this module's lane process runs as when the
    /// supervisor can switch uids (root, or CAP_SETUID and CAP_SETGID):
    /// never root, the PostgreSQL server account or the supervisor's own
    /// uid; `pg_ident.conf` maps it to `Role::Writer` of this module only.
    pub fn lane_identity(self) -> &'static str {
        match self {
            Module::Core => "ransomeye-lane-core",
            Module::Dpi => "ransomeye-lane-dpi",
            Module::LinuxAgent => "ransomeye-lane-linux-agent",
            Module::WindowsAgent => "ransomeye-lane-windows-agent",
        }
    }

    /// The account comment of [`Module::lane_identity`].
    pub fn lane_identity_comment(self) -> &'static str {
        match self {
            Module::Core => "RansomEye Core Engine ingest lane",
            Module::Dpi => "RansomEye DPI probe ingest lane",
            Module::LinuxAgent => "RansomEye Linux agent ingest lane",
            Module::WindowsAgent => "RansomEye Windows agent relay ingest lane",
        }
    }

    /// The abstract Unix socket name of this module's lane, without the
    /// leading NUL byte (shown with `@` as in /proc/net/unix).
    pub fn socket_name(self, instance: &str) -> String {
        format!("ransomeye/{instance}/{}", self.name())
    }

    /// Name of the module's quarantine table.
    pub fn quarantine_table(self) -> String {
        format!("{}.quarantine", self.schema())
    }
}
