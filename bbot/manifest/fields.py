"""Every wire spelling of every bbot manifest field, in one place.

Most of these spellings are RECALLED, NOT VERIFIED (bbot-protocol.md §0 and §5,
question 1): the libbbot sources that define them were not at hand. Only those
marked "verified" were seen in a real manifest (brep:INSTALL-CI-DEV:78-112). If a
real agent or brep disagrees, change the constant here; no other module spells a
field name.
"""

from __future__ import annotations

from typing import Final

# --- machine header manifest (§2.1) -------------------------------------------------
MACHINE_ID: Final = "id"  # verified
MACHINE_NAME: Final = "name"  # verified
MACHINE_SUMMARY: Final = "summary"  # verified
MACHINE_ROLE: Final = "role"
MACHINE_RAM_MINIMUM: Final = "ram-minimum"
MACHINE_RAM_MAXIMUM: Final = "ram-maximum"

MACHINE_ROLE_BUILD: Final = "build"
MACHINE_ROLE_AUXILIARY: Final = "auxiliary"
MACHINE_ROLES: Final = (MACHINE_ROLE_BUILD, MACHINE_ROLE_AUXILIARY)

# --- agent-local machine manifest (§2.8; ours where libbbot has no such field) ------
MACHINE_TYPE: Final = "type"
MACHINE_IMAGE: Final = "image"
MACHINE_MEMORY: Final = "memory"  # MiB
MACHINE_CPUS: Final = "cpus"
MACHINE_OPTIONS: Final = "options"
MACHINE_MAC: Final = "mac"

MACHINE_TYPES: Final = ("process", "kvm", "container", "nspawn")

# --- task request manifest (§2.2) ---------------------------------------------------
REQUEST_AGENT: Final = "agent"  # verified
REQUEST_TOOLCHAIN_NAME: Final = "toolchain-name"  # verified
REQUEST_TOOLCHAIN_VERSION: Final = "toolchain-version"  # verified
REQUEST_INTERACTIVE_MODE: Final = "interactive-mode"
REQUEST_INTERACTIVE_LOGIN: Final = "interactive-login"
REQUEST_FINGERPRINT: Final = "fingerprint"
REQUEST_AUXILIARY_RAM: Final = "auxiliary-ram"

INTERACTIVE_MODE_FALSE: Final = "false"
INTERACTIVE_MODE_TRUE: Final = "true"
INTERACTIVE_MODE_BOTH: Final = "both"
INTERACTIVE_MODES: Final = (INTERACTIVE_MODE_FALSE, INTERACTIVE_MODE_TRUE, INTERACTIVE_MODE_BOTH)

# --- task response manifest (§2.3) --------------------------------------------------
RESPONSE_SESSION: Final = "session"  # verified
RESPONSE_CHALLENGE: Final = "challenge"
RESPONSE_RESULT_URL: Final = "result-url"  # verified
# `<type>-upload-url`, one per upload type.
RESPONSE_UPLOAD_URL_SUFFIX: Final = "-upload-url"
RESPONSE_AGENT_CHECKSUM: Final = "agent-checksum"  # verified

# --- task manifest (§2.4), in brep's constructor order ------------------------------
TASK_NAME: Final = "name"
TASK_VERSION: Final = "version"
TASK_REPOSITORY_URL: Final = "repository-url"
TASK_REPOSITORY_TYPE: Final = "repository-type"
TASK_TRUST: Final = "trust"
TASK_REQUIRES: Final = "requires"
TASK_TESTS: Final = "tests"
TASK_EXAMPLES: Final = "examples"
TASK_BENCHMARKS: Final = "benchmarks"
TASK_DEPENDENCY_CHECKSUM: Final = "dependency-checksum"
TASK_MACHINE: Final = "machine"
# `auxiliary-machine` or `auxiliary-machine-<environment-name>`.
TASK_AUXILIARY_MACHINE: Final = "auxiliary-machine"
TASK_TARGET: Final = "target"
TASK_ENVIRONMENT: Final = "environment"
TASK_AUXILIARY_ENVIRONMENT: Final = "auxiliary-environment"
TASK_TARGET_CONFIG: Final = "target-config"
TASK_PACKAGE_CONFIG: Final = "package-config"
TASK_HOST: Final = "host"
TASK_WARNING_REGEX: Final = "warning-regex"
TASK_INTERACTIVE: Final = "interactive"
TASK_WORKER_CHECKSUM: Final = "worker-checksum"

BOOLEAN_TRUE: Final = "true"
BOOLEAN_FALSE: Final = "false"

# --- result request manifest (§2.5) -------------------------------------------------
RESULT_REQUEST_SESSION: Final = "session"  # verified
RESULT_REQUEST_CHALLENGE: Final = "challenge"
RESULT_REQUEST_AGENT_CHECKSUM: Final = "agent-checksum"  # verified

# --- result manifest (§2.6) ---------------------------------------------------------
RESULT_NAME: Final = "name"  # verified
RESULT_VERSION: Final = "version"  # verified
RESULT_STATUS: Final = "status"  # verified
# `<operation>-status` and `<operation>-log`.
RESULT_OPERATION_STATUS_SUFFIX: Final = "-status"
RESULT_OPERATION_LOG_SUFFIX: Final = "-log"
RESULT_WORKER_CHECKSUM: Final = "worker-checksum"
RESULT_DEPENDENCY_CHECKSUM: Final = "dependency-checksum"

# --- stream names used in error messages (§1.9; brep uses the request ones) ---------
STREAM_MACHINE_HEADER: Final = "machine_header_manifest"
STREAM_MACHINE: Final = "machine_manifest"
STREAM_TASK_REQUEST: Final = "task_request_manifest"
STREAM_TASK_RESPONSE: Final = "task_response_manifest"
STREAM_TASK: Final = "task_manifest"
STREAM_RESULT: Final = "result_manifest"
STREAM_RESULT_REQUEST: Final = "result_request_manifest"

# --- HTTP content type of every manifest body (DESIGN.md) ---------------------------
CONTENT_TYPE: Final = "text/manifest;charset=utf-8"
