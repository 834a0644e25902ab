//! Every SQL statement the Function App runs, in one place. They are T-SQL, parameterised with `@P1`…`@Pn`
//! (never built from input), and written in the subset that SQL Server and SQLite both execute verbatim:
//! objects are named `procfwk.<Table>` (SQLite attaches its file under the schema name `procfwk`),
//! timestamps come in as parameters rather than from `GETUTCDATE()`, `COALESCE` instead of `ISNULL`, no
//! `TOP`/`LIMIT`, no `UPDATE … FROM`. Tests parse each one with a T-SQL parser and prepare it on SQLite.

/// A named SQL statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statement {
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident = $sql:expr;)*) => {
        $( $(#[$doc])* pub const $name: Statement = Statement { name: stringify!($name), sql: $sql }; )*
        /// All statements, for the syntax tests.
        pub const ALL: &[Statement] = &[$($name),*];
    };
}

statements! {
    // ---------------------------------------------------------------- schema
    /// The newest schema version `db init` applied (NULL when none).
    SCHEMA_VERSION = "SELECT MAX(Version) AS Version FROM procfwk.SchemaVersion";

    // ---------------------------------------------------------------- properties
    /// Current value of every property.
    CURRENT_PROPERTIES = "SELECT PropertyName, PropertyValue FROM procfwk.Properties WHERE ValidTo IS NULL";
    /// Close the current version of a property (`AddProperty`'s first half).
    CLOSE_PROPERTY = "UPDATE procfwk.Properties SET ValidTo = @P2 WHERE PropertyName = @P1 AND ValidTo IS NULL";
    /// Insert a new current version of a property.
    INSERT_PROPERTY = "INSERT INTO procfwk.Properties (PropertyName, PropertyValue, Description, ValidFrom) VALUES (@P1, @P2, @P3, @P4)";

    // ---------------------------------------------------------------- execution control
    /// Who is running an execution scope (all stages, or one batch).
    /// Lock a scope's row before deciding on it (an exclusive row lock on SQL Server and PostgreSQL, the
    /// write lock on SQLite): a second Parent waits, then reads what the first committed. Without it,
    /// snapshot reads (Azure SQL's READ_COMMITTED_SNAPSHOT) let two Parents take over one stale scope.
    CONTROL_LOCK = "UPDATE procfwk.ExecutionControl SET LastActivityDateTime = LastActivityDateTime WHERE ControlKey = @P1";
    CONTROL_GET = "SELECT ControlKey, ExecutionId, ControlStatus, StartedDateTime, LastActivityDateTime, ParentRunId, CallingOrchestratorName FROM procfwk.ExecutionControl WHERE ControlKey = @P1";
    CONTROL_INSERT = "INSERT INTO procfwk.ExecutionControl (ControlKey, ExecutionId, ControlStatus, StartedDateTime, LastActivityDateTime, ParentRunId, CallingOrchestratorName) VALUES (@P1, @P2, 'Running', @P3, @P3, @P4, @P5)";
    /// Take over a scope that is not running (compare-and-set on the status read before).
    CONTROL_TAKE = "UPDATE procfwk.ExecutionControl SET ExecutionId = @P2, ControlStatus = 'Running', StartedDateTime = @P3, LastActivityDateTime = @P3, ParentRunId = @P4, CallingOrchestratorName = @P5 WHERE ControlKey = @P1 AND ControlStatus = @P6";
    CONTROL_TOUCH = "UPDATE procfwk.ExecutionControl SET LastActivityDateTime = @P2 WHERE ExecutionId = @P1 AND ControlStatus = 'Running'";
    CONTROL_SET_STATUS = "UPDATE procfwk.ExecutionControl SET ControlStatus = @P2, LastActivityDateTime = @P3 WHERE ExecutionId = @P1";
    /// An orchestrator by name (the factory of a Parent run, from `CallingOrchestratorName`).
    ORCHESTRATOR_BY_NAME = "SELECT OrchestratorName, OrchestratorType, IsFrameworkOrchestrator, ResourceGroupName, SubscriptionId FROM procfwk.Orchestrators WHERE OrchestratorName = @P1";
    CONTROL_BY_EXECUTION = "SELECT ControlKey, ExecutionId, ControlStatus FROM procfwk.ExecutionControl WHERE ExecutionId = @P1";

    // ---------------------------------------------------------------- batches
    BATCH_BY_NAME = "SELECT BatchId, BatchName, Enabled FROM procfwk.Batches WHERE UPPER(BatchName) = UPPER(@P1)";
    BATCH_EXECUTIONS = "SELECT ExecutionId, BatchStatus, StartDateTime FROM procfwk.BatchExecution WHERE BatchId = @P1 AND BatchStatus IN ('Running', 'Stopping', 'Stopped') ORDER BY StartDateTime DESC, ExecutionId";
    BATCH_EXECUTION_INSERT = "INSERT INTO procfwk.BatchExecution (BatchId, ExecutionId, BatchName, BatchStatus, StartDateTime) VALUES (@P1, @P2, @P3, 'Running', @P4)";
    BATCH_EXECUTION_STATUS = "UPDATE procfwk.BatchExecution SET BatchStatus = @P2 WHERE ExecutionId = @P1";
    BATCH_EXECUTION_END = "UPDATE procfwk.BatchExecution SET BatchStatus = @P2, EndDateTime = @P3 WHERE ExecutionId = @P1";
    /// A batch that failed stops; one that is already stopping or stopped stays so.
    BATCH_EXECUTION_STOPPING = "UPDATE procfwk.BatchExecution SET BatchStatus = 'Stopping' WHERE ExecutionId = @P1 AND BatchStatus = 'Running'";

    // ---------------------------------------------------------------- current execution: create / reset / archive
    /// `CreateNewExecution`: one row per enabled worker in an enabled stage.
    CREATE_EXECUTION_ALL = "INSERT INTO procfwk.CurrentExecution (LocalExecutionId, StageId, PipelineId, CallingOrchestratorName, ResourceGroupName, OrchestratorType, OrchestratorName, PipelineName) \
        SELECT @P1, p.StageId, p.PipelineId, @P2, o.ResourceGroupName, o.OrchestratorType, o.OrchestratorName, p.PipelineName \
        FROM procfwk.Pipelines p \
        INNER JOIN procfwk.Stages s ON s.StageId = p.StageId \
        INNER JOIN procfwk.Orchestrators o ON o.OrchestratorId = p.OrchestratorId \
        WHERE p.Enabled = 1 AND s.Enabled = 1";
    /// The same, limited to the stages linked to a batch.
    CREATE_EXECUTION_BATCH = "INSERT INTO procfwk.CurrentExecution (LocalExecutionId, StageId, PipelineId, CallingOrchestratorName, ResourceGroupName, OrchestratorType, OrchestratorName, PipelineName) \
        SELECT @P1, p.StageId, p.PipelineId, @P2, o.ResourceGroupName, o.OrchestratorType, o.OrchestratorName, p.PipelineName \
        FROM procfwk.Pipelines p \
        INNER JOIN procfwk.Stages s ON s.StageId = p.StageId \
        INNER JOIN procfwk.Orchestrators o ON o.OrchestratorId = p.OrchestratorId \
        INNER JOIN procfwk.BatchStageLink l ON l.StageId = s.StageId \
        WHERE p.Enabled = 1 AND s.Enabled = 1 AND l.BatchId = @P3";
    /// Executions present in CurrentExecution (all of them, for the non-batch scope).
    EXECUTIONS_PRESENT = "SELECT LocalExecutionId, COUNT(0) AS Workers, SUM(CASE WHEN PipelineStatus = 'Success' THEN 1 ELSE 0 END) AS Succeeded, SUM(CASE WHEN PipelineStatus = 'Running' THEN 1 ELSE 0 END) AS Running FROM procfwk.CurrentExecution GROUP BY LocalExecutionId";
    /// `ResetExecution`, first half: unfinished rows are logged as Unknown.
    RESET_LOG_UNFINISHED = "INSERT INTO procfwk.ExecutionLog (LocalExecutionId, StageId, PipelineId, CallingOrchestratorName, ResourceGroupName, OrchestratorType, OrchestratorName, PipelineName, StartDateTime, PipelineStatus, EndDateTime, PipelineRunId, PipelineParamsUsed, RunLink) \
        SELECT LocalExecutionId, StageId, PipelineId, CallingOrchestratorName, ResourceGroupName, OrchestratorType, OrchestratorName, PipelineName, StartDateTime, 'Unknown', EndDateTime, PipelineRunId, PipelineParamsUsed, RunLink \
        FROM procfwk.CurrentExecution \
        WHERE LocalExecutionId = @P1 AND PipelineStatus IS NOT NULL AND PipelineStatus NOT IN ('Success', 'Failed', 'Blocked', 'Cancelled')";
    /// `ResetExecution`, second half: everything not successful (or blocked) starts again.
    RESET_ROWS = "UPDATE procfwk.CurrentExecution SET StartDateTime = NULL, EndDateTime = NULL, PipelineStatus = NULL, LastStatusCheckDateTime = NULL, PipelineRunId = NULL, RunLink = NULL, PipelineParamsUsed = NULL, IsBlocked = 0 \
        WHERE LocalExecutionId = @P1 AND (COALESCE(PipelineStatus, '') <> 'Success' OR IsBlocked = 1)";
    /// Copy an execution's rows to the log (`UpdateExecutionLog`).
    ARCHIVE_EXECUTION = "INSERT INTO procfwk.ExecutionLog (LocalExecutionId, StageId, PipelineId, CallingOrchestratorName, ResourceGroupName, OrchestratorType, OrchestratorName, PipelineName, StartDateTime, PipelineStatus, EndDateTime, PipelineRunId, PipelineParamsUsed, RunLink) \
        SELECT LocalExecutionId, StageId, PipelineId, CallingOrchestratorName, ResourceGroupName, OrchestratorType, OrchestratorName, PipelineName, StartDateTime, PipelineStatus, EndDateTime, PipelineRunId, PipelineParamsUsed, RunLink \
        FROM procfwk.CurrentExecution WHERE LocalExecutionId = @P1";
    DELETE_EXECUTION = "DELETE FROM procfwk.CurrentExecution WHERE LocalExecutionId = @P1";
    /// Stages still to run, in order (`GetStages`).
    STAGES_TO_RUN = "SELECT c.StageId, s.StageName, COUNT(0) AS Workers FROM procfwk.CurrentExecution c INNER JOIN procfwk.Stages s ON s.StageId = c.StageId \
        WHERE c.LocalExecutionId = @P1 AND COALESCE(c.PipelineStatus, '') <> 'Success' GROUP BY c.StageId, s.StageName ORDER BY c.StageId";
    /// Status counts of one execution.
    EXECUTION_STATUS_COUNTS = "SELECT COALESCE(PipelineStatus, 'Not Started') AS PipelineStatus, COUNT(0) AS RecordCount FROM procfwk.CurrentExecution WHERE LocalExecutionId = @P1 GROUP BY PipelineStatus";

    // ---------------------------------------------------------------- stages
    /// Workers of earlier stages still marked Running when a later stage starts (their Infant died).
    STALE_RUNNING_BEFORE_STAGE = "SELECT StageId, PipelineId, PipelineRunId FROM procfwk.CurrentExecution WHERE LocalExecutionId = @P1 AND StageId < @P2 AND PipelineStatus = 'Running'";
    BLOCKED_IN_STAGE = "SELECT PipelineId FROM procfwk.CurrentExecution WHERE LocalExecutionId = @P1 AND StageId = @P2 AND IsBlocked = 1";
    /// `SetLogStagePreparing`.
    STAGE_PREPARING = "UPDATE procfwk.CurrentExecution SET PipelineStatus = 'Preparing' WHERE LocalExecutionId = @P1 AND StageId = @P2 AND StartDateTime IS NULL AND IsBlocked <> 1";
    /// `GetPipelinesInStage`.
    WORKERS_IN_STAGE = "SELECT PipelineId, PipelineName FROM procfwk.CurrentExecution WHERE LocalExecutionId = @P1 AND StageId = @P2 AND COALESCE(PipelineStatus, '') <> 'Success' AND IsBlocked <> 1 ORDER BY PipelineId";

    // ---------------------------------------------------------------- workers
    /// Everything needed to call a worker (`GetWorkerDetailsWrapper`).
    WORKER_DETAILS = "SELECT c.PipelineName, c.OrchestratorName, c.OrchestratorType, c.ResourceGroupName, c.PipelineStatus, c.PipelineRunId, c.IsBlocked, c.StartDateTime, \
        o.OrchestratorId, o.SubscriptionId, sub.TenantId \
        FROM procfwk.CurrentExecution c \
        INNER JOIN procfwk.Pipelines p ON p.PipelineId = c.PipelineId \
        INNER JOIN procfwk.Orchestrators o ON o.OrchestratorId = p.OrchestratorId \
        INNER JOIN procfwk.Subscriptions sub ON sub.SubscriptionId = o.SubscriptionId \
        WHERE c.LocalExecutionId = @P1 AND c.StageId = @P2 AND c.PipelineId = @P3";
    /// The worker's credential: a pipeline-specific link first, then the orchestrator-wide one (no
    /// `ORDER BY … DESC` on the nullable PipelineId: engines differ in where they sort NULL). A secret
    /// stored in the database (`SPNHandlingMethod = StoreInDatabase`) is decrypted here, on the server,
    /// with procfwk's passphrase: `CONCAT(OrchestratorName, OrchestratorType, PipelineName)` for a
    /// pipeline-specific credential, `CONCAT(OrchestratorName, OrchestratorType)` for an orchestrator-wide
    /// one (`GetWorkerAuthDetails`). `PrincipalSecretValue` is NULL when the passphrase does not fit.
    WORKER_CREDENTIAL = "SELECT a.PipelineId, sp.CredentialId, sp.PrincipalId, sp.PrincipalIdUrl, sp.PrincipalSecretUrl, \
        CASE WHEN sp.PrincipalSecret IS NULL THEN 0 ELSE 1 END AS HasPrincipalSecret, \
        DECRYPTBYPASSPHRASE(CASE WHEN a.PipelineId IS NULL THEN CONCAT(o.OrchestratorName, o.OrchestratorType) \
            ELSE CONCAT(o.OrchestratorName, o.OrchestratorType, p.PipelineName) END, sp.PrincipalSecret) AS PrincipalSecretValue \
        FROM procfwk.PipelineAuthLink a \
        INNER JOIN procfwk.ServicePrincipals sp ON sp.CredentialId = a.CredentialId \
        INNER JOIN procfwk.Orchestrators o ON o.OrchestratorId = a.OrchestratorId \
        LEFT JOIN procfwk.Pipelines p ON p.PipelineId = a.PipelineId \
        WHERE a.OrchestratorId = @P1 AND (a.PipelineId = @P2 OR a.PipelineId IS NULL) \
        ORDER BY CASE WHEN a.PipelineId IS NULL THEN 1 ELSE 0 END, a.AuthId";
    WORKER_PARAMETERS = "SELECT ParameterName, ParameterValue FROM procfwk.PipelineParameters WHERE PipelineId = @P1 ORDER BY ParameterId";
    PARAMETERS_LAST_USED = "UPDATE procfwk.PipelineParameters SET ParameterValueLastUsed = ParameterValue WHERE PipelineId = @P1";
    /// Claim a worker for starting: only a worker that is waiting (not started, not blocked) is claimed,
    /// with the caller's token (@P6), so a replay of this very claim is recognised as its own.
    CLAIM_WORKER = "UPDATE procfwk.CurrentExecution SET PipelineStatus = 'Running', StartDateTime = COALESCE(StartDateTime, @P4), PipelineParamsUsed = @P5, LastStatusCheckDateTime = NULL, EndDateTime = NULL, ClaimToken = @P6, ClaimedDateTime = @P4 \
        WHERE LocalExecutionId = @P1 AND StageId = @P2 AND PipelineId = @P3 AND IsBlocked = 0 AND (PipelineStatus IS NULL OR PipelineStatus IN ('Preparing', 'Validating'))";
    /// Take over a claim whose holder died before recording a run: compare-and-set on the token seen
    /// (@P6; the nil GUID for a claim without one), so of two callers taking over at once one wins.
    CLAIM_TAKEOVER = "UPDATE procfwk.CurrentExecution SET ClaimToken = @P4, ClaimedDateTime = @P5 \
        WHERE LocalExecutionId = @P1 AND StageId = @P2 AND PipelineId = @P3 AND PipelineStatus = 'Running' AND PipelineRunId IS NULL \
        AND COALESCE(ClaimToken, '00000000-0000-0000-0000-000000000000') = @P6";
    /// `SetLogPipelineRunId`: only the holder of the claim (@P5) records, and only the first run id, with
    /// the run's portal link (@P6).
    RECORD_RUN_ID = "UPDATE procfwk.CurrentExecution SET PipelineRunId = @P4, RunLink = @P6 WHERE LocalExecutionId = @P1 AND StageId = @P2 AND PipelineId = @P3 AND PipelineStatus = 'Running' AND PipelineRunId IS NULL AND ClaimToken = @P5";
    /// `SetLogPipelineLastStatusCheck`.
    RECORD_CHECK = "UPDATE procfwk.CurrentExecution SET LastStatusCheckDateTime = @P4 WHERE LocalExecutionId = @P1 AND StageId = @P2 AND PipelineId = @P3";
    /// Set a worker's final status, only if it is still the run we think it is.
    SET_RESULT = "UPDATE procfwk.CurrentExecution SET PipelineStatus = @P4, EndDateTime = COALESCE(EndDateTime, @P5) \
        WHERE LocalExecutionId = @P1 AND StageId = @P2 AND PipelineId = @P3 AND PipelineStatus = 'Running' AND PipelineRunId = @P6";
    /// Set an activity failure (`SetLogActivityFailed`): the worker was never started or its status
    /// cannot be read.
    SET_ACTIVITY_FAILED = "UPDATE procfwk.CurrentExecution SET PipelineStatus = @P4, EndDateTime = COALESCE(EndDateTime, @P5) \
        WHERE LocalExecutionId = @P1 AND StageId = @P2 AND PipelineId = @P3 AND PipelineStatus = 'Running'";
    /// Copy one worker's row to the log.
    LOG_WORKER = "INSERT INTO procfwk.ExecutionLog (LocalExecutionId, StageId, PipelineId, CallingOrchestratorName, ResourceGroupName, OrchestratorType, OrchestratorName, PipelineName, StartDateTime, PipelineStatus, EndDateTime, PipelineRunId, PipelineParamsUsed, RunLink) \
        SELECT LocalExecutionId, StageId, PipelineId, CallingOrchestratorName, ResourceGroupName, OrchestratorType, OrchestratorName, PipelineName, StartDateTime, PipelineStatus, EndDateTime, PipelineRunId, PipelineParamsUsed, RunLink \
        FROM procfwk.CurrentExecution WHERE LocalExecutionId = @P1 AND StageId = @P2 AND PipelineId = @P3";
    INSERT_ERROR = "INSERT INTO procfwk.ErrorLog (LocalExecutionId, PipelineRunId, ActivityRunId, ActivityName, ActivityType, ErrorCode, ErrorType, ErrorMessage) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8)";
    /// Simple failure handling: every worker of a later stage is blocked.
    BLOCK_LATER_STAGES = "UPDATE procfwk.CurrentExecution SET PipelineStatus = 'Blocked', IsBlocked = 1 WHERE LocalExecutionId = @P1 AND StageId > @P2";
    /// Dependency-chain failure handling: the worker's dependants are blocked.
    BLOCK_DEPENDANTS = "UPDATE procfwk.CurrentExecution SET PipelineStatus = 'Blocked', IsBlocked = 1 WHERE LocalExecutionId = @P1 \
        AND PipelineId IN (SELECT DependantPipelineId FROM procfwk.PipelineDependencies WHERE PipelineId = @P2)";
    /// Claims whose run id was never recorded (the holder may have died after ADF accepted the run).
    UNRECORDED_CLAIMS = "SELECT c.StageId, c.PipelineId, c.ClaimToken, c.ClaimedDateTime, c.StartDateTime, c.PipelineParamsUsed FROM procfwk.CurrentExecution c \
        WHERE c.LocalExecutionId = @P1 AND c.PipelineStatus = 'Running' AND c.PipelineRunId IS NULL";
    /// Adopt the run a dead claim produced: only while the claim seen (@P5; the nil GUID for a claim
    /// without a token) still holds and no run id is recorded — a compare-and-set, so of two callers
    /// adopting at once one records and the other finds the run recorded.
    ADOPT_RUN = "UPDATE procfwk.CurrentExecution SET PipelineRunId = @P4, RunLink = @P6 \
        WHERE LocalExecutionId = @P1 AND StageId = @P2 AND PipelineId = @P3 AND PipelineStatus = 'Running' AND PipelineRunId IS NULL \
        AND COALESCE(ClaimToken, '00000000-0000-0000-0000-000000000000') = @P5";
    /// Give up a dead claim that produced no run (status @P4): compare-and-set on the claim seen (@P6).
    ABANDON_CLAIM = "UPDATE procfwk.CurrentExecution SET PipelineStatus = @P4, EndDateTime = COALESCE(EndDateTime, @P5) \
        WHERE LocalExecutionId = @P1 AND StageId = @P2 AND PipelineId = @P3 AND PipelineStatus = 'Running' AND PipelineRunId IS NULL \
        AND COALESCE(ClaimToken, '00000000-0000-0000-0000-000000000000') = @P6";
    /// How many workers (current or logged) have recorded run @P1.
    RUN_ID_KNOWN = "SELECT (SELECT COUNT(0) FROM procfwk.CurrentExecution WHERE PipelineRunId = @P1) + (SELECT COUNT(0) FROM procfwk.ExecutionLog WHERE PipelineRunId = @P1) AS N";
    /// Workers whose run is in flight (for the clean-up before a restart).
    IN_FLIGHT_WORKERS = "SELECT c.LocalExecutionId, c.StageId, c.PipelineId, c.PipelineRunId FROM procfwk.CurrentExecution c \
        WHERE c.LocalExecutionId = @P1 AND c.PipelineRunId IS NOT NULL AND c.PipelineStatus NOT IN ('Success', 'Failed', 'Blocked', 'Cancelled')";
    WORKER_ROW = "SELECT LocalExecutionId, StageId, PipelineId, PipelineName, PipelineStatus, PipelineRunId, IsBlocked, StartDateTime, EndDateTime, LastStatusCheckDateTime, ClaimToken, ClaimedDateTime, PipelineParamsUsed FROM procfwk.CurrentExecution \
        WHERE LocalExecutionId = @P1 AND StageId = @P2 AND PipelineId = @P3";

    // ---------------------------------------------------------------- metadata administration (seed-sample)
    COUNT_STAGES = "SELECT COUNT(0) AS Stages FROM procfwk.Stages";
    INSERT_TENANT = "INSERT INTO procfwk.Tenants (TenantId, Name, Description) VALUES (@P1, @P2, @P3)";
    INSERT_SUBSCRIPTION = "INSERT INTO procfwk.Subscriptions (SubscriptionId, Name, Description, TenantId) VALUES (@P1, @P2, @P3, @P4)";
    INSERT_ORCHESTRATOR = "INSERT INTO procfwk.Orchestrators (OrchestratorName, OrchestratorType, IsFrameworkOrchestrator, Description, ResourceGroupName, SubscriptionId) VALUES (@P1, @P2, @P3, @P4, @P5, @P6)";
    INSERT_STAGE = "INSERT INTO procfwk.Stages (StageName, StageDescription, Enabled) VALUES (@P1, @P2, @P3)";
    INSERT_PIPELINE = "INSERT INTO procfwk.Pipelines (OrchestratorId, StageId, PipelineName, LogicalPredecessorId, Enabled) VALUES (@P1, @P2, @P3, @P4, @P5)";
    INSERT_PARAMETER = "INSERT INTO procfwk.PipelineParameters (PipelineId, ParameterName, ParameterValue) VALUES (@P1, @P2, @P3)";
    INSERT_DEPENDENCY = "INSERT INTO procfwk.PipelineDependencies (PipelineId, DependantPipelineId) VALUES (@P1, @P2)";
    INSERT_BATCH = "INSERT INTO procfwk.Batches (BatchId, BatchName, BatchDescription, Enabled) VALUES (@P1, @P2, @P3, @P4)";
    INSERT_BATCH_STAGE = "INSERT INTO procfwk.BatchStageLink (BatchId, StageId) VALUES (@P1, @P2)";
    ORCHESTRATOR_IDS = "SELECT OrchestratorId, OrchestratorName FROM procfwk.Orchestrators";
    STAGE_IDS = "SELECT StageId, StageName FROM procfwk.Stages";
    PIPELINE_IDS = "SELECT PipelineId, StageId, PipelineName, OrchestratorId FROM procfwk.Pipelines ORDER BY PipelineId";

    // ---------------------------------------------------------------- VmPower: pools, leases, power log
    /// Take the pool's lock: the first statement of every VmPower decision (an exclusive row lock on SQL
    /// Server, the write lock on SQLite), so two decisions about one pool never interleave.
    VM_POOL_LOCK = "UPDATE procfwk.VmPools SET Version = Version + 1, LastDecisionDateTime = @P2 WHERE PoolKey = @P1";
    VM_POOL_INSERT = "INSERT INTO procfwk.VmPools (PoolKey, SubscriptionId, ResourceGroupName, FactoryName, FactoryResourceGroupName, IntegrationRuntimeName, JobsPerNode, MinNodes, GraceSeconds, Version, CreatedDateTime, LastDecisionDateTime) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, 1, @P10, @P10)";
    /// A caller may change the pool's runtime, sizing and grace (the last caller's settings apply).
    VM_POOL_CONFIGURE = "UPDATE procfwk.VmPools SET FactoryName = @P2, FactoryResourceGroupName = @P3, IntegrationRuntimeName = @P4, JobsPerNode = @P5, MinNodes = @P6, GraceSeconds = @P7 WHERE PoolKey = @P1";
    VM_POOL_GET = "SELECT PoolKey, SubscriptionId, ResourceGroupName, FactoryName, FactoryResourceGroupName, IntegrationRuntimeName, JobsPerNode, MinNodes, GraceSeconds, LastLeaseEndDateTime FROM procfwk.VmPools WHERE PoolKey = @P1";
    VM_POOL_KEYS = "SELECT PoolKey FROM procfwk.VmPools ORDER BY PoolKey";
    VM_POOL_LEASE_END = "UPDATE procfwk.VmPools SET LastLeaseEndDateTime = @P2 WHERE PoolKey = @P1";
    VM_NODES_OF_POOL = "SELECT NodeIndex, VmKey, VmName, PendingAction, PendingSinceDateTime, PendingOperationUrl, IdleSinceDateTime, LastPowerState, LastObservedDateTime FROM procfwk.VmPoolNodes WHERE PoolKey = @P1 ORDER BY NodeIndex";
    /// Which pool a VM belongs to (a VM belongs to one pool at most).
    VM_NODE_POOL = "SELECT PoolKey FROM procfwk.VmPoolNodes WHERE VmKey = @P1";
    VM_NODE_INSERT = "INSERT INTO procfwk.VmPoolNodes (PoolKey, NodeIndex, VmKey, VmName) VALUES (@P1, @P2, @P3, @P4)";
    VM_NODE_UPDATE = "UPDATE procfwk.VmPoolNodes SET PendingAction = @P3, PendingSinceDateTime = @P4, PendingOperationUrl = @P5, IdleSinceDateTime = @P6, LastPowerState = @P7, LastObservedDateTime = @P8 WHERE PoolKey = @P1 AND NodeIndex = @P2";
    VM_LEASES_OF_POOL = "SELECT Holder, AcquiredDateTime, RenewedDateTime, ExpiresDateTime FROM procfwk.VmLeases WHERE PoolKey = @P1 ORDER BY Holder";
    VM_LEASE_RENEW = "UPDATE procfwk.VmLeases SET RenewedDateTime = @P3, ExpiresDateTime = @P4 WHERE PoolKey = @P1 AND Holder = @P2";
    VM_LEASE_INSERT = "INSERT INTO procfwk.VmLeases (PoolKey, Holder, AcquiredDateTime, RenewedDateTime, ExpiresDateTime) VALUES (@P1, @P2, @P3, @P3, @P4)";
    VM_LEASE_DELETE = "DELETE FROM procfwk.VmLeases WHERE PoolKey = @P1 AND Holder = @P2";
    /// Delete a lease only if it is still expired (@P3 = now): a renewal that committed after the
    /// decision read the leases keeps its lease (the row count says so).
    VM_LEASE_EXPIRE = "DELETE FROM procfwk.VmLeases WHERE PoolKey = @P1 AND Holder = @P2 AND ExpiresDateTime <= @P3";
    VM_LEASE_GET = "SELECT Holder, AcquiredDateTime, RenewedDateTime, ExpiresDateTime FROM procfwk.VmLeases WHERE PoolKey = @P1 AND Holder = @P2";
    /// What holders asked of the pool while it was busy (schema version 4).
    VM_INTENTS_OF_POOL = "SELECT Holder, Intent, IntentDateTime, LeaseSeconds FROM procfwk.VmLeaseIntents WHERE PoolKey = @P1 ORDER BY Holder";
    VM_INTENT_GET = "SELECT Holder, Intent, IntentDateTime, LeaseSeconds FROM procfwk.VmLeaseIntents WHERE PoolKey = @P1 AND Holder = @P2";
    /// Replace a holder's intent with a later one (@P4 = when it was asked): an intent sent earlier
    /// never overwrites one sent later (the row count says whether it did).
    VM_INTENT_REPLACE = "UPDATE procfwk.VmLeaseIntents SET Intent = @P3, IntentDateTime = @P4, LeaseSeconds = @P5 WHERE PoolKey = @P1 AND Holder = @P2 AND IntentDateTime < @P4";
    VM_INTENT_INSERT = "INSERT INTO procfwk.VmLeaseIntents (PoolKey, Holder, Intent, IntentDateTime, LeaseSeconds) VALUES (@P1, @P2, @P3, @P4, @P5)";
    /// Take a `Take` intent for the lease it becomes, only if it is still the one read (@P3): a release
    /// recorded meanwhile wins (the row count says so).
    VM_INTENT_CONSUME_TAKE = "DELETE FROM procfwk.VmLeaseIntents WHERE PoolKey = @P1 AND Holder = @P2 AND Intent = 'Take' AND IntentDateTime = @P3";
    /// A holder's intents asked before @P3 (a decision under the lock acted on its later request).
    VM_INTENT_CLEAR_BEFORE = "DELETE FROM procfwk.VmLeaseIntents WHERE PoolKey = @P1 AND Holder = @P2 AND IntentDateTime < @P3";
    /// Releases older than @P2 no longer stand against anything still on its way.
    VM_INTENT_PURGE = "DELETE FROM procfwk.VmLeaseIntents WHERE PoolKey = @P1 AND Intent = 'Release' AND IntentDateTime < @P2";
    VM_POWER_LOG_INSERT = "INSERT INTO procfwk.VmPowerLog (PoolKey, VmName, EventDateTime, Event, Holder, PowerState, ActiveLeases, Detail) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8)";
    /// The runtime a worker needs: its own row first, else its orchestrator's.
    WORKER_RUNTIME = "SELECT r.PipelineId, r.SubscriptionId, r.ResourceGroupName, r.VmNames, r.FactoryName, r.FactoryResourceGroupName, r.IntegrationRuntimeName, r.JobsPerNode, r.MinNodes, r.LeaseSeconds, r.GraceSeconds \
        FROM procfwk.WorkerRuntimes r INNER JOIN procfwk.Pipelines p ON r.PipelineId = p.PipelineId OR (r.PipelineId IS NULL AND r.OrchestratorId = p.OrchestratorId) \
        WHERE p.PipelineId = @P1 ORDER BY r.PipelineId DESC, r.LinkId";
    /// The whole power log in order (the cost report).
    VM_POWER_LOG_ALL = "SELECT LogId, PoolKey, VmName, EventDateTime, Event, Holder, PowerState, ActiveLeases, Detail FROM procfwk.VmPowerLog ORDER BY LogId";

    // ---------------------------------------------------------------- read-outs
    CURRENT_EXECUTION_ROWS = "SELECT LocalExecutionId, StageId, PipelineId, PipelineName, PipelineStatus, IsBlocked, PipelineRunId, StartDateTime, EndDateTime FROM procfwk.CurrentExecution ORDER BY StageId, PipelineId";
    EXECUTION_LOG_ROWS = "SELECT LogId, LocalExecutionId, StageId, PipelineId, PipelineName, PipelineStatus, PipelineRunId, StartDateTime, EndDateTime FROM procfwk.ExecutionLog ORDER BY LogId";
    ERROR_LOG_ROWS = "SELECT LogId, LocalExecutionId, PipelineRunId, ActivityRunId, ActivityName, ActivityType, ErrorCode, ErrorType, ErrorMessage FROM procfwk.ErrorLog ORDER BY LogId";
    CURRENT_SUMMARY = "SELECT COALESCE(PipelineStatus, 'Not Started') AS PipelineStatus, COUNT(0) AS RecordCount FROM procfwk.CurrentExecution GROUP BY PipelineStatus ORDER BY PipelineStatus";
    LAST_EXECUTION_ID = "SELECT LocalExecutionId FROM procfwk.ExecutionLog WHERE LogId = (SELECT MAX(LogId) FROM procfwk.ExecutionLog WHERE EndDateTime IS NOT NULL)";
    EXECUTION_LOG_FOR = "SELECT LogId, StageId, PipelineId, PipelineName, StartDateTime, PipelineStatus, EndDateTime FROM procfwk.ExecutionLog WHERE LocalExecutionId = @P1 ORDER BY LogId";
    // ---------------------------------------------------------------- workers whose runtime VM failed
    /// Fail a worker that is still waiting to start (not started, not blocked) because its runtime VM
    /// could not be started (VmPower worker mode): status @P4, start and end time @P5.
    FAIL_WAITING_WORKER = "UPDATE procfwk.CurrentExecution SET PipelineStatus = @P4, StartDateTime = COALESCE(StartDateTime, @P5), EndDateTime = COALESCE(EndDateTime, @P5) \
        WHERE LocalExecutionId = @P1 AND StageId = @P2 AND PipelineId = @P3 AND IsBlocked = 0 AND (PipelineStatus IS NULL OR PipelineStatus IN ('Preparing', 'Validating'))";

    // ---------------------------------------------------------------- dashboard (read-only, bounded)
    // The logs only grow and their LogId follows time, so the dashboard reads the newest rows as a range
    // of the primary key (`LogId > @P1`), widening the range until it holds the executions it shows:
    // the cost follows what the page shows, not the age of the store.
    /// The newest ExecutionLog row.
    DASH_LOG_LAST_ID = "SELECT COALESCE(MAX(LogId), 0) AS LastLogId FROM procfwk.ExecutionLog";
    /// The executions with log rows after a LogId, one row each.
    DASH_EXECUTIONS_AFTER = "SELECT LocalExecutionId, MIN(LogId) AS FirstLogId, MAX(LogId) AS LastLogId, MIN(StartDateTime) AS StartDateTime, MAX(EndDateTime) AS EndDateTime, COUNT(0) AS Workers, \
        SUM(CASE WHEN PipelineStatus = 'Success' THEN 1 ELSE 0 END) AS Succeeded, SUM(CASE WHEN PipelineStatus = 'Failed' THEN 1 ELSE 0 END) AS Failed \
        FROM procfwk.ExecutionLog WHERE LogId > @P1 GROUP BY LocalExecutionId";
    /// Each execution's span of each stage after a LogId (AverageStageDuration's inner query).
    DASH_STAGE_SPANS_AFTER = "SELECT LocalExecutionId, StageId, MIN(StartDateTime) AS StartDateTime, MAX(EndDateTime) AS EndDateTime FROM procfwk.ExecutionLog \
        WHERE LogId > @P1 GROUP BY LocalExecutionId, StageId";
    /// Worker rows of the log from a LogId on (the timeline).
    DASH_LOG_ROWS_FROM = "SELECT LogId, LocalExecutionId, StageId, PipelineId, PipelineName, PipelineStatus, PipelineRunId, StartDateTime, EndDateTime, OrchestratorName, OrchestratorType, ResourceGroupName \
        FROM procfwk.ExecutionLog WHERE LogId >= @P1 ORDER BY LogId";
    /// The current execution's rows with what the dashboard shows of them.
    DASH_CURRENT_ROWS = "SELECT LocalExecutionId, StageId, PipelineId, PipelineName, PipelineStatus, IsBlocked, PipelineRunId, StartDateTime, EndDateTime, LastStatusCheckDateTime, OrchestratorName, OrchestratorType, ResourceGroupName \
        FROM procfwk.CurrentExecution ORDER BY LocalExecutionId, StageId, PipelineId";
    DASH_ERROR_LAST_ID = "SELECT COALESCE(MAX(LogId), 0) AS LastLogId FROM procfwk.ErrorLog";
    /// ErrorLog rows after a LogId.
    DASH_ERRORS_AFTER = "SELECT LogId, LocalExecutionId, PipelineRunId, ActivityRunId, ActivityName, ActivityType, ErrorCode, ErrorType, ErrorMessage FROM procfwk.ErrorLog WHERE LogId > @P1 ORDER BY LogId";
    /// Where each orchestrator lives (the run links).
    DASH_ORCHESTRATORS = "SELECT OrchestratorName, OrchestratorType, ResourceGroupName, SubscriptionId FROM procfwk.Orchestrators";
    DASH_POWER_LOG_LAST_ID = "SELECT COALESCE(MAX(LogId), 0) AS LastLogId FROM procfwk.VmPowerLog";
    /// Power log rows after a LogId (the recent events of each pool).
    DASH_POWER_LOG_AFTER = "SELECT LogId, PoolKey, VmName, EventDateTime, Event, Holder, PowerState, ActiveLeases FROM procfwk.VmPowerLog WHERE LogId > @P1 ORDER BY LogId";
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::MsSqlDialect;
    use sqlparser::parser::Parser;

    #[test]
    fn every_statement_is_valid_tsql() {
        for s in ALL {
            let parsed = Parser::parse_sql(&MsSqlDialect {}, s.sql);
            assert!(parsed.is_ok(), "{}: {:?}\n{}", s.name, parsed.err(), s.sql);
            assert_eq!(
                parsed.map(|p| p.len()).unwrap_or(0),
                1,
                "{} is one statement",
                s.name
            );
        }
    }

    #[test]
    fn statements_are_parameterised_not_formatted() {
        for s in ALL {
            assert!(
                !s.sql.contains('{'),
                "{} looks like a format string",
                s.name
            );
            assert!(
                !s.sql.contains("GETUTCDATE"),
                "{}: timestamps are parameters",
                s.name
            );
        }
    }

    #[test]
    fn the_parser_rejects_broken_sql() {
        assert!(
            Parser::parse_sql(&MsSqlDialect {}, "SELEC PipelineId FROM procfwk.Pipelines").is_err()
        );
    }
}

#[cfg(test)]
mod deploy_script_tests {
    use sqlparser::dialect::MsSqlDialect;
    use sqlparser::parser::Parser;

    /// Strip the idempotence guards (`IF OBJECT_ID(...) IS NULL`, `IF SCHEMA_ID(...) IS NULL`,
    /// `IF NOT EXISTS (...)`) and unwrap `EXEC (N'...')`, leaving the statement itself to parse.
    fn guarded_statement(batch: &str) -> String {
        let mut text: String = batch
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_string();
        loop {
            let upper = text.to_uppercase();
            if upper.starts_with("IF ") {
                let first = upper.lines().next().unwrap_or("").trim_end().to_string();
                text = if first.ends_with("IS NULL")
                    || first.ends_with("IS NOT NULL")
                    || first.ends_with(')')
                {
                    // The guard is the whole first line.
                    text.split_once('\n')
                        .map(|(_, r)| r.to_string())
                        .unwrap_or_default()
                } else {
                    // `IF <guard> IS NULL <statement>` on one line.
                    let at = first
                        .rfind(" IS NULL ")
                        .map(|i| i + " IS NULL ".len())
                        .unwrap_or(0);
                    text[at..].to_string()
                };
                text = text.trim().to_string();
                continue;
            }
            if let Some(inner) = text.strip_prefix("EXEC (N'") {
                let inner = inner
                    .trim_end()
                    .trim_end_matches(';')
                    .trim_end_matches(')')
                    .trim_end_matches('\'');
                text = inner.replace("''", "'");
                continue;
            }
            return text;
        }
    }

    #[test]
    fn every_deploy_script_batch_is_valid_tsql() {
        for (name, script) in crate::store::schema::SCHEMA_SCRIPTS {
            let batches = crate::store::schema::script_batches(script);
            let separators = script
                .lines()
                .filter(|l| l.trim().eq_ignore_ascii_case("GO"))
                .count();
            assert!(
                separators >= 2 && batches.len() == separators,
                "{name}: {} batches for {separators} GO lines",
                batches.len()
            );
            for batch in batches {
                let statement = guarded_statement(&batch);
                let parsed = Parser::parse_sql(&MsSqlDialect {}, &statement);
                assert!(parsed.is_ok(), "{name}: {:?}\n{statement}", parsed.err());
            }
        }
    }

    #[test]
    fn guard_stripping_does_not_hide_errors() {
        let broken = guarded_statement("IF OBJECT_ID(N'x') IS NULL\nCREATE TABLEE x (a INT)");
        assert!(Parser::parse_sql(&MsSqlDialect {}, &broken).is_err());
    }
}
