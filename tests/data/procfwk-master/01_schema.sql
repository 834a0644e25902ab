-- A database shaped like one procfwk master (1.8.4+, 2.0) created: its schemas, tables (with procfwk's
-- columns and types), views (the reporting ones in procfwkReporting), the backward-compatibility
-- synonyms in procfwk, and procedures (bodies minimal: what matters here is that they exist, as
-- procedures, under procfwk's names). Written for the tests from the inventory in procfwk.md §2;
-- not procfwk's code. Batches are separated by GO lines, as sqlcmd runs them.

CREATE SCHEMA [procfwk];
GO
CREATE SCHEMA [procfwkHelpers];
GO
CREATE SCHEMA [procfwkReporting];
GO
CREATE SCHEMA [procfwkTesting];
GO

CREATE TABLE [procfwk].[Tenants] (
    [TenantId] UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,
    [Name] NVARCHAR(200) NOT NULL,
    [Description] NVARCHAR(MAX) NULL
);
GO
CREATE TABLE [procfwk].[Subscriptions] (
    [SubscriptionId] UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,
    [Name] NVARCHAR(200) NOT NULL,
    [Description] NVARCHAR(MAX) NULL,
    [TenantId] UNIQUEIDENTIFIER NOT NULL REFERENCES [procfwk].[Tenants] ([TenantId])
);
GO
CREATE TABLE [procfwk].[Orchestrators] (
    [OrchestratorId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [OrchestratorName] NVARCHAR(200) NOT NULL,
    [OrchestratorType] CHAR(3) NOT NULL CHECK ([OrchestratorType] IN ('ADF', 'SYN')),
    [IsFrameworkOrchestrator] BIT NOT NULL DEFAULT 0,
    [ResourceGroupName] NVARCHAR(200) NOT NULL,
    [SubscriptionId] UNIQUEIDENTIFIER NOT NULL REFERENCES [procfwk].[Subscriptions] ([SubscriptionId]),
    [Description] NVARCHAR(MAX) NULL
);
GO
CREATE TABLE [procfwk].[Stages] (
    [StageId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [StageName] VARCHAR(225) NOT NULL,
    [StageDescription] VARCHAR(4000) NULL,
    [Enabled] BIT NOT NULL DEFAULT 1
);
GO
CREATE TABLE [procfwk].[Pipelines] (
    [PipelineId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [OrchestratorId] INT NOT NULL REFERENCES [procfwk].[Orchestrators] ([OrchestratorId]),
    [StageId] INT NOT NULL REFERENCES [procfwk].[Stages] ([StageId]),
    [PipelineName] NVARCHAR(200) NOT NULL,
    [LogicalPredecessorId] INT NULL REFERENCES [procfwk].[Pipelines] ([PipelineId]),
    [Enabled] BIT NOT NULL DEFAULT 1
);
GO
CREATE TABLE [procfwk].[PipelineParameters] (
    [ParameterId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [PipelineId] INT NOT NULL REFERENCES [procfwk].[Pipelines] ([PipelineId]),
    [ParameterName] VARCHAR(128) NOT NULL,
    [ParameterValue] NVARCHAR(MAX) NULL,
    [ParameterValueLastUsed] NVARCHAR(MAX) NULL
);
GO
CREATE TABLE [procfwk].[PipelineDependencies] (
    [DependencyId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [PipelineId] INT NOT NULL REFERENCES [procfwk].[Pipelines] ([PipelineId]),
    [DependantPipelineId] INT NOT NULL REFERENCES [procfwk].[Pipelines] ([PipelineId]),
    CONSTRAINT [UK_PipelinesToDependantPipelines] UNIQUE ([PipelineId], [DependantPipelineId]),
    CONSTRAINT [CK_PipelineDependencies] CHECK ([PipelineId] <> [DependantPipelineId])
);
GO
CREATE TABLE [procfwk].[Properties] (
    [PropertyId] INT IDENTITY(1,1) NOT NULL,
    [PropertyName] VARCHAR(128) NOT NULL,
    [PropertyValue] NVARCHAR(MAX) NOT NULL,
    [Description] NVARCHAR(MAX) NULL,
    [ValidFrom] DATETIME NOT NULL DEFAULT GETDATE(),
    [ValidTo] DATETIME NULL,
    CONSTRAINT [PK_Properties] PRIMARY KEY ([PropertyId], [PropertyName])
);
GO
CREATE TABLE [dbo].[ServicePrincipals] (
    [CredentialId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [PrincipalName] NVARCHAR(256) NULL,
    [PrincipalId] UNIQUEIDENTIFIER NULL,
    [PrincipalSecret] VARBINARY(256) NULL,
    [PrincipalIdUrl] NVARCHAR(MAX) NULL,
    [PrincipalSecretUrl] NVARCHAR(MAX) NULL
);
GO
CREATE TABLE [procfwk].[PipelineAuthLink] (
    [AuthId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [PipelineId] INT NULL REFERENCES [procfwk].[Pipelines] ([PipelineId]),
    [OrchestratorId] INT NOT NULL REFERENCES [procfwk].[Orchestrators] ([OrchestratorId]),
    [CredentialId] INT NOT NULL REFERENCES [dbo].[ServicePrincipals] ([CredentialId])
);
GO
CREATE TABLE [procfwk].[CurrentExecution] (
    [LocalExecutionId] UNIQUEIDENTIFIER NOT NULL,
    [StageId] INT NOT NULL,
    [PipelineId] INT NOT NULL,
    [CallingOrchestratorName] NVARCHAR(200) NOT NULL,
    [ResourceGroupName] NVARCHAR(200) NOT NULL,
    [OrchestratorType] CHAR(3) NOT NULL,
    [OrchestratorName] NVARCHAR(200) NOT NULL,
    [PipelineName] NVARCHAR(200) NOT NULL,
    [StartDateTime] DATETIME NULL,
    [PipelineStatus] NVARCHAR(200) NULL,
    [LastStatusCheckDateTime] DATETIME NULL,
    [EndDateTime] DATETIME NULL,
    [IsBlocked] BIT NOT NULL DEFAULT 0,
    [PipelineRunId] UNIQUEIDENTIFIER NULL,
    [PipelineParamsUsed] NVARCHAR(MAX) NULL,
    CONSTRAINT [PK_CurrentExecution] PRIMARY KEY ([LocalExecutionId], [StageId], [PipelineId])
);
GO
CREATE INDEX [IDX_GetPipelinesInStage] ON [procfwk].[CurrentExecution] ([LocalExecutionId], [StageId], [PipelineStatus])
    INCLUDE ([PipelineId], [PipelineName], [OrchestratorType], [OrchestratorName], [ResourceGroupName]);
GO
CREATE TABLE [procfwk].[ExecutionLog] (
    [LogId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [LocalExecutionId] UNIQUEIDENTIFIER NOT NULL,
    [StageId] INT NOT NULL,
    [PipelineId] INT NOT NULL,
    [CallingOrchestratorName] NVARCHAR(200) NOT NULL DEFAULT 'Unknown',
    [ResourceGroupName] NVARCHAR(200) NOT NULL DEFAULT 'Unknown',
    [OrchestratorType] CHAR(3) NOT NULL DEFAULT 'N/A',
    [OrchestratorName] NVARCHAR(200) NOT NULL DEFAULT 'Unknown',
    [PipelineName] NVARCHAR(200) NOT NULL,
    [StartDateTime] DATETIME NULL,
    [PipelineStatus] NVARCHAR(200) NULL,
    [EndDateTime] DATETIME NULL,
    [PipelineRunId] UNIQUEIDENTIFIER NULL,
    [PipelineParamsUsed] NVARCHAR(MAX) NULL DEFAULT 'None'
);
GO
CREATE TABLE [procfwk].[ErrorLog] (
    [LogId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [LocalExecutionId] UNIQUEIDENTIFIER NOT NULL,
    [PipelineRunId] UNIQUEIDENTIFIER NOT NULL,
    [ActivityRunId] UNIQUEIDENTIFIER NOT NULL,
    [ActivityName] VARCHAR(100) NOT NULL,
    [ActivityType] VARCHAR(100) NOT NULL,
    [ErrorCode] VARCHAR(100) NOT NULL,
    [ErrorType] VARCHAR(100) NOT NULL,
    [ErrorMessage] NVARCHAR(MAX) NULL
);
GO
CREATE TABLE [procfwk].[Recipients] (
    [RecipientId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [Name] VARCHAR(255) NULL,
    [EmailAddress] NVARCHAR(500) NOT NULL,
    [MessagePreference] CHAR(3) NOT NULL DEFAULT 'TO' CHECK ([MessagePreference] IN ('TO', 'CC', 'BCC')),
    [Enabled] BIT NOT NULL DEFAULT 1,
    CONSTRAINT [UK_EmailAddressMessagePreference] UNIQUE ([EmailAddress], [MessagePreference])
);
GO
CREATE TABLE [procfwk].[AlertOutcomes] (
    [OutcomeBitPosition] INT IDENTITY(0,1) NOT NULL PRIMARY KEY,
    [PipelineOutcomeStatus] NVARCHAR(200) NOT NULL UNIQUE,
    [BitValue] INT NOT NULL
);
GO
CREATE TABLE [procfwk].[PipelineAlertLink] (
    [AlertId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [PipelineId] INT NOT NULL REFERENCES [procfwk].[Pipelines] ([PipelineId]),
    [RecipientId] INT NOT NULL REFERENCES [procfwk].[Recipients] ([RecipientId]),
    [OutcomesBitValue] INT NOT NULL,
    [Enabled] BIT NOT NULL DEFAULT 1
);
GO
CREATE TABLE [procfwk].[Batches] (
    [BatchId] UNIQUEIDENTIFIER NOT NULL DEFAULT NEWID() PRIMARY KEY,
    [BatchName] VARCHAR(255) NOT NULL,
    [BatchDescription] VARCHAR(4000) NULL,
    [Enabled] BIT NOT NULL DEFAULT 0
);
GO
CREATE TABLE [procfwk].[BatchStageLink] (
    [BatchId] UNIQUEIDENTIFIER NOT NULL REFERENCES [procfwk].[Batches] ([BatchId]),
    [StageId] INT NOT NULL REFERENCES [procfwk].[Stages] ([StageId]),
    CONSTRAINT [PK_BatchStageLink] PRIMARY KEY ([BatchId], [StageId])
);
GO
CREATE TABLE [procfwk].[BatchExecution] (
    [BatchId] UNIQUEIDENTIFIER NOT NULL,
    [ExecutionId] UNIQUEIDENTIFIER NOT NULL,
    [BatchName] VARCHAR(255) NOT NULL,
    [BatchStatus] NVARCHAR(200) NOT NULL,
    [StartDateTime] DATETIME NOT NULL,
    [EndDateTime] DATETIME NULL,
    CONSTRAINT [PK_BatchExecution] PRIMARY KEY ([BatchId], [ExecutionId])
);
GO

-- Views in procfwk.
CREATE VIEW [procfwk].[CurrentProperties] AS
SELECT [PropertyName], [PropertyValue] FROM [procfwk].[Properties] WHERE [ValidTo] IS NULL;
GO
CREATE VIEW [procfwk].[DataFactorys] AS
SELECT [OrchestratorId] AS [DataFactoryId], [OrchestratorName] AS [DataFactoryName], [ResourceGroupName],
       [SubscriptionId], [Description]
FROM [procfwk].[Orchestrators] WHERE [OrchestratorType] = 'ADF';
GO
CREATE VIEW [procfwk].[PipelineParameterDataSizes] AS
SELECT [PipelineId], SUM(LEN([ParameterName]) + LEN(ISNULL([ParameterValue], ''))) / 1024.0 / 1024.0 AS [Size]
FROM [procfwk].[PipelineParameters] GROUP BY [PipelineId];
GO

-- Reporting views (moved to procfwkReporting in 1.8.4).
CREATE VIEW [procfwkReporting].[CurrentExecutionSummary] AS
SELECT ISNULL([PipelineStatus], 'Not Started') AS [PipelineStatus], COUNT(0) AS [RecordCount]
FROM [procfwk].[CurrentExecution] GROUP BY [PipelineStatus];
GO
CREATE VIEW [procfwkReporting].[CompleteExecutionLog] AS
SELECT [LogId], [LocalExecutionId], [StageId], [PipelineId], [CallingOrchestratorName], [ResourceGroupName],
       [OrchestratorType], [OrchestratorName], [PipelineName], [StartDateTime], [PipelineStatus], [EndDateTime],
       [PipelineRunId], [PipelineParamsUsed],
       DATEDIFF(MINUTE, [StartDateTime], [EndDateTime]) AS [RunDurationMinutes]
FROM [procfwk].[ExecutionLog];
GO
CREATE VIEW [procfwkReporting].[CompleteExecutionErrorLog] AS
SELECT e.[LogId] AS [ExecutionLogId], r.[LogId] AS [ErrorLogId], e.[LocalExecutionId],
       e.[StartDateTime] AS [ProcessingDateTime], e.[CallingOrchestratorName],
       e.[OrchestratorType] AS [WorkerOrchestartorType], e.[OrchestratorName] AS [WorkerOrchestrator],
       e.[PipelineName] AS [WorkerPipelineName], e.[PipelineStatus], r.[ActivityRunId], r.[ActivityName],
       r.[ActivityType], r.[ErrorCode], r.[ErrorType], r.[ErrorMessage]
FROM [procfwk].[ExecutionLog] e
INNER JOIN [procfwk].[ErrorLog] r ON r.[LocalExecutionId] = e.[LocalExecutionId] AND r.[PipelineRunId] = e.[PipelineRunId];
GO
CREATE VIEW [procfwkReporting].[LastExecution] AS
SELECT [LogId], [StageId], [PipelineId], [PipelineName], [StartDateTime], [PipelineStatus], [EndDateTime],
       DATEDIFF(MINUTE, [StartDateTime], [EndDateTime]) AS [RunDurationMinutes]
FROM [procfwk].[ExecutionLog]
WHERE [LocalExecutionId] = (
    SELECT [LocalExecutionId] FROM [procfwk].[ExecutionLog]
    WHERE [LogId] = (SELECT MAX([LogId]) FROM [procfwk].[ExecutionLog] WHERE [EndDateTime] IS NOT NULL));
GO
CREATE VIEW [procfwkReporting].[LastExecutionSummary] AS
SELECT [LocalExecutionId], DATEDIFF(MINUTE, MIN([StartDateTime]), MAX([EndDateTime])) AS [RunDurationMinutes]
FROM [procfwk].[ExecutionLog] GROUP BY [LocalExecutionId];
GO
CREATE VIEW [procfwkReporting].[AverageStageDuration] AS
SELECT s.[StageId], s.[StageName], s.[StageDescription], AVG(x.[Minutes]) AS [AvgStageRunDurationMinutes]
FROM [procfwk].[Stages] s
INNER JOIN (SELECT [LocalExecutionId], [StageId],
                   DATEDIFF(MINUTE, MIN([StartDateTime]), MAX([EndDateTime])) AS [Minutes]
            FROM [procfwk].[ExecutionLog] GROUP BY [LocalExecutionId], [StageId]) x ON x.[StageId] = s.[StageId]
GROUP BY s.[StageId], s.[StageName], s.[StageDescription];
GO
CREATE VIEW [procfwkReporting].[WorkerParallelismOverTime] AS
SELECT CAST([StartDateTime] AS DATE) AS [WallclockDate], [LocalExecutionId], COUNT(0) AS [WorkerCount]
FROM [procfwk].[ExecutionLog] GROUP BY CAST([StartDateTime] AS DATE), [LocalExecutionId];
GO
CREATE VIEW [procfwkHelpers].[PipelineDependencyChains] AS
SELECT ps.[StageName] AS [PredecessorStage], pp.[PipelineName] AS [PredecessorPipeline],
       ds.[StageName] AS [DependantStage], dp.[PipelineName] AS [DependantPipeline]
FROM [procfwk].[PipelineDependencies] d
INNER JOIN [procfwk].[Pipelines] pp ON pp.[PipelineId] = d.[PipelineId]
INNER JOIN [procfwk].[Stages] ps ON ps.[StageId] = pp.[StageId]
INNER JOIN [procfwk].[Pipelines] dp ON dp.[PipelineId] = d.[DependantPipelineId]
INNER JOIN [procfwk].[Stages] ds ON ds.[StageId] = dp.[StageId];
GO

-- Procedures (bodies minimal).
CREATE PROCEDURE [procfwk].[ExecutionWrapper] @CallingOrchestratorName NVARCHAR(200) = NULL, @BatchName VARCHAR(255) = NULL
AS
BEGIN
    SET NOCOUNT ON;
    SELECT NEWID() AS [ExecutionId];
END;
GO
CREATE PROCEDURE [procfwk].[GetWorkerAuthDetails] @ExecutionId UNIQUEIDENTIFIER, @StageId INT, @PipelineId INT
AS
BEGIN
    SET NOCOUNT ON;
    SELECT CAST(NULL AS UNIQUEIDENTIFIER) AS [TenantId];
END;
GO
CREATE PROCEDURE [procfwk].[SetLogPipelineRunning] @ExecutionId UNIQUEIDENTIFIER, @StageId INT, @PipelineId INT
AS
BEGIN
    SET NOCOUNT ON;
    UPDATE [procfwk].[CurrentExecution] SET [PipelineStatus] = 'Running'
    WHERE [LocalExecutionId] = @ExecutionId AND [StageId] = @StageId AND [PipelineId] = @PipelineId;
END;
GO
CREATE PROCEDURE [procfwk].[UpdateExecutionLog] @PerformErrorCheck BIT = 1, @ExecutionId UNIQUEIDENTIFIER = NULL
AS
BEGIN
    SET NOCOUNT ON;
END;
GO
CREATE PROCEDURE [procfwkHelpers].[AddProperty] @PropertyName VARCHAR(128), @PropertyValue NVARCHAR(MAX), @Description NVARCHAR(MAX) = NULL
AS
BEGIN
    SET NOCOUNT ON;
END;
GO
CREATE PROCEDURE [procfwkHelpers].[AddServicePrincipal] @OrchestratorName NVARCHAR(200), @OrchestratorType CHAR(3), @PrincipalId NVARCHAR(256), @PrincipalSecret NVARCHAR(MAX), @SpecificPipelineName NVARCHAR(200) = NULL, @PrincipalName NVARCHAR(256) = NULL
AS
BEGIN
    SET NOCOUNT ON;
END;
GO
CREATE PROCEDURE [procfwkHelpers].[DeleteServicePrincipal] @OrchestratorName NVARCHAR(200), @OrchestratorType CHAR(3), @PrincipalIdValue NVARCHAR(256), @SpecificPipelineName NVARCHAR(200) = NULL
AS
BEGIN
    SET NOCOUNT ON;
END;
GO
CREATE PROCEDURE [dbo].[ExampleCustomExecutionPrecursor]
AS
BEGIN
    SET NOCOUNT ON;
END;
GO

-- The backward-compatibility synonyms of 1.8.4: the old procfwk names of the moved objects.
CREATE SYNONYM [procfwk].[AverageStageDuration] FOR [procfwkReporting].[AverageStageDuration];
GO
CREATE SYNONYM [procfwk].[CompleteExecutionErrorLog] FOR [procfwkReporting].[CompleteExecutionErrorLog];
GO
CREATE SYNONYM [procfwk].[CompleteExecutionLog] FOR [procfwkReporting].[CompleteExecutionLog];
GO
CREATE SYNONYM [procfwk].[CurrentExecutionSummary] FOR [procfwkReporting].[CurrentExecutionSummary];
GO
CREATE SYNONYM [procfwk].[LastExecution] FOR [procfwkReporting].[LastExecution];
GO
CREATE SYNONYM [procfwk].[LastExecutionSummary] FOR [procfwkReporting].[LastExecutionSummary];
GO
CREATE SYNONYM [procfwk].[WorkerParallelismOverTime] FOR [procfwkReporting].[WorkerParallelismOverTime];
GO
CREATE SYNONYM [procfwk].[PipelineDependencyChains] FOR [procfwkHelpers].[PipelineDependencyChains];
GO
CREATE SYNONYM [procfwk].[AddProperty] FOR [procfwkHelpers].[AddProperty];
GO
CREATE SYNONYM [procfwk].[AddServicePrincipal] FOR [procfwkHelpers].[AddServicePrincipal];
GO
CREATE SYNONYM [procfwk].[DeleteServicePrincipal] FOR [procfwkHelpers].[DeleteServicePrincipal];
GO
