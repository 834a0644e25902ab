-- Rows of the procfwk-master-shaped database: procfwk's sample metadata (procfwk-sample-metadata.md),
-- two earlier executions in the logs, and three credentials as procfwk keeps them. The client ids and
-- secrets are the test simulator's principals A and B (tests/support): one StoreInDatabase secret for the
-- whole of FrameworkFactory (passphrase CONCAT(OrchestratorName, OrchestratorType)), one for the worker
-- "Wait 3" alone (passphrase CONCAT(OrchestratorName, OrchestratorType, PipelineName)), both made with
-- ENCRYPTBYPASSPHRASE as procfwk's AddServicePrincipal does, and one StoreInKeyVault credential (Key
-- Vault URLs) for the worker "Wait 2".

INSERT INTO [procfwk].[Tenants] ([TenantId], [Name], [Description])
VALUES ('12345678-1234-1234-1234-012345678910', 'Default', 'Example value for development environment.');
INSERT INTO [procfwk].[Subscriptions] ([SubscriptionId], [Name], [Description], [TenantId])
VALUES ('12345678-1234-1234-1234-012345678910', 'Default', 'Example value for development environment.', '12345678-1234-1234-1234-012345678910');
GO

INSERT INTO [procfwk].[Orchestrators] ([OrchestratorName], [OrchestratorType], [IsFrameworkOrchestrator], [ResourceGroupName], [SubscriptionId], [Description]) VALUES
    (N'FrameworkFactory', 'ADF', 1, N'ADF.procfwk', '12345678-1234-1234-1234-012345678910', N'Example Data Factory used for development.'),
    (N'FrameworkFactoryDev', 'ADF', 0, N'ADF.procfwk', '12345678-1234-1234-1234-012345678910', N'Example Data Factory used for development deployments.'),
    (N'FrameworkFactoryTest', 'ADF', 0, N'ADF.procfwk', '12345678-1234-1234-1234-012345678910', N'Example Data Factory used for testing.'),
    (N'WorkersFactory', 'ADF', 0, N'ADF.procfwk', '12345678-1234-1234-1234-012345678910', N'Example Data Factory used to house worker pipelines.'),
    (N'procfwkforsynapse', 'SYN', 0, N'ADF.procfwk', '12345678-1234-1234-1234-012345678910', N'Example Synapse instance used to house all pipelines.');
GO

INSERT INTO [procfwk].[Stages] ([StageName], [StageDescription], [Enabled]) VALUES
    ('Extract', 'Ingest all data from source systems.', 1),
    ('Transform', 'Transform ingested data and apply business logic.', 1),
    ('Load', 'Load transformed data into data warehouse layer.', 1),
    ('Serve', 'Load transformed data into semantic layer.', 1),
    ('Speed', 'Regular loading of frequently used data.', 0);
GO

INSERT INTO [procfwk].[Pipelines] ([OrchestratorId], [StageId], [PipelineName], [LogicalPredecessorId], [Enabled]) VALUES
    (1, 1, N'Wait 1', NULL, 1), (1, 1, N'Wait 2', NULL, 1), (1, 1, N'Intentional Error', NULL, 1), (1, 1, N'Wait 3', NULL, 1),
    (1, 2, N'Wait 4', NULL, 1), (1, 2, N'Wait 5', 1, 1), (1, 2, N'Wait 6', 1, 1), (1, 2, N'Wait 7', NULL, 1),
    (1, 3, N'Wait 8', 1, 1), (1, 3, N'Wait 9', 6, 1), (1, 4, N'Wait 10', 9, 1),
    (1, 5, N'Wait 1', NULL, 0), (1, 5, N'Wait 2', NULL, 0), (1, 5, N'Wait 3', NULL, 0), (1, 5, N'Wait 4', NULL, 0),
    (5, 1, N'Wait 1', NULL, 0), (5, 1, N'Wait 2', NULL, 0), (5, 1, N'Wait 3', NULL, 0), (5, 1, N'Wait 4', NULL, 0);
GO

INSERT INTO [procfwk].[PipelineParameters] ([PipelineId], [ParameterName], [ParameterValue], [ParameterValueLastUsed]) VALUES
    (1, 'WaitTime', N'3', N'3'), (2, 'WaitTime', N'6', N'6'), (6, 'WaitTime', N'9', N'9'), (4, 'WaitTime', N'5', N'5'),
    (5, 'WaitTime', N'2', N'2'), (3, 'RaiseErrors', N'false', N'false'), (3, 'WaitTime', N'10', N'10'),
    (7, 'WaitTime', N'3', N'3'), (8, 'WaitTime', N'5', N'5'), (9, 'WaitTime', N'7', N'7'), (11, 'WaitTime', N'10', N'10');
GO

INSERT INTO [procfwk].[PipelineDependencies] ([PipelineId], [DependantPipelineId]) VALUES (3, 6), (3, 7), (7, 10), (10, 11);
GO

INSERT INTO [procfwk].[Properties] ([PropertyName], [PropertyValue], [Description], [ValidFrom], [ValidTo]) VALUES
    ('PipelineStatusCheckDuration', N'60', N'Duration applied to the Wait activity within the Infant pipeline Until iterations.', '2025-01-01 00:00:00', '2025-06-01 00:00:00'),
    ('OverideRestart', N'0', N'Should processing not be restarted from the point of failure or should a new execution will be created regardless. 1 = Start New, 0 = Restart.', '2025-01-01 00:00:00', NULL),
    ('PipelineStatusCheckDuration', N'30', N'Duration applied to the Wait activity within the Infant pipeline Until iterations.', '2025-06-01 00:00:00', NULL),
    ('UnknownWorkerResultBlocks', N'1', N'If a worker pipeline returns an unknown status. Should this block and fail downstream pipeline? 1 = Yes, 0 = No.', '2025-01-01 00:00:00', NULL),
    ('CancelledWorkerResultBlocks', N'1', N'If a worker pipeline returns an cancelled status. Should this block and fail downstream pipeline? 1 = Yes, 0 = No.', '2025-01-01 00:00:00', NULL),
    ('UseFrameworkEmailAlerting', N'0', N'Do you want the framework to handle pipeline email alerts via the database metadata? 1 = Yes, 0 = No.', '2025-01-01 00:00:00', NULL),
    ('EmailAlertBodyTemplate', N'<hr/><strong>Pipeline Name: </strong>##PipelineName###<br/>', N'Basic HTML template of execution information used as the eventual body in email alerts sent.', '2025-01-01 00:00:00', NULL),
    ('FailureHandling', N'Simple', N'Accepted values: None, Simple, DependencyChain.', '2025-01-01 00:00:00', NULL),
    ('SPNHandlingMethod', N'StoreInDatabase', N'Accepted values: StoreInDatabase, StoreInKeyVault. See v1.8.2 release notes for full details.', '2025-01-01 00:00:00', NULL),
    ('ExecutionPrecursorProc', N'[dbo].[ExampleCustomExecutionPrecursor]', N'This procedure will be called first in the parent pipeline.', '2025-01-01 00:00:00', NULL),
    ('UseExecutionBatches', N'0', N'Establishes if execution batches are used as a level above execution stages within the framework. 1 = True, 0 = False.', '2025-01-01 00:00:00', NULL),
    ('FrameworkFactoryResourceGroup', N'ADF.procfwk', N'Supports various queries where the framework factory is inspecting itself.', '2025-01-01 00:00:00', NULL),
    ('PreviousPipelineRunsQueryRange', N'-1', N'Used as a date range, today +- this value.', '2025-01-01 00:00:00', NULL);
GO

INSERT INTO [procfwk].[Batches] ([BatchId], [BatchName], [BatchDescription], [Enabled]) VALUES
    ('0a1b2c3d-0000-4000-8000-000000000001', 'Daily', 'Daily Worker Pipelines.', 1),
    ('0a1b2c3d-0000-4000-8000-000000000002', 'Hourly', 'Hourly Worker Pipelines.', 1);
INSERT INTO [procfwk].[BatchStageLink] ([BatchId], [StageId]) VALUES
    ('0a1b2c3d-0000-4000-8000-000000000001', 1), ('0a1b2c3d-0000-4000-8000-000000000001', 2),
    ('0a1b2c3d-0000-4000-8000-000000000001', 3), ('0a1b2c3d-0000-4000-8000-000000000001', 4),
    ('0a1b2c3d-0000-4000-8000-000000000002', 5);
GO

INSERT INTO [procfwk].[Recipients] ([Name], [EmailAddress], [MessagePreference], [Enabled]) VALUES
    ('Test User 1', N'test.user1@adfprocfwk.com', 'TO', 1),
    ('Test User 2', N'test.user2@adfprocfwk.com', 'CC', 1);
INSERT INTO [procfwk].[AlertOutcomes] ([PipelineOutcomeStatus], [BitValue]) VALUES
    (N'All', 1), (N'Success', 2), (N'Failed', 4), (N'Unknown', 8), (N'Cancelled', 16);
INSERT INTO [procfwk].[PipelineAlertLink] ([PipelineId], [RecipientId], [OutcomesBitValue], [Enabled]) VALUES (3, 1, 4, 1);
GO

-- Credentials (dbo.ServicePrincipals, as procfwk keeps them).
INSERT INTO [dbo].[ServicePrincipals] ([PrincipalName], [PrincipalId], [PrincipalSecret])
SELECT N'procfwk-workers', '11111111-1111-1111-1111-111111111111',
       ENCRYPTBYPASSPHRASE(CONCAT(o.[OrchestratorName], o.[OrchestratorType]), N'sim-secret-A-7f3c9e1b')
FROM [procfwk].[Orchestrators] o WHERE o.[OrchestratorName] = N'FrameworkFactory';
INSERT INTO [dbo].[ServicePrincipals] ([PrincipalName], [PrincipalIdUrl], [PrincipalSecretUrl])
VALUES (N'procfwk-keyvault', N'https://procfwk-kv.vault.azure.net/secrets/procfwk-app-id', N'https://procfwk-kv.vault.azure.net/secrets/procfwk-app-secret');
INSERT INTO [dbo].[ServicePrincipals] ([PrincipalName], [PrincipalId], [PrincipalSecret])
SELECT N'procfwk-wait3', '22222222-2222-2222-2222-222222222222',
       ENCRYPTBYPASSPHRASE(CONCAT(o.[OrchestratorName], o.[OrchestratorType], p.[PipelineName]), N'sim-secret-B-5d2a8c4e')
FROM [procfwk].[Orchestrators] o INNER JOIN [procfwk].[Pipelines] p ON p.[OrchestratorId] = o.[OrchestratorId]
WHERE o.[OrchestratorName] = N'FrameworkFactory' AND p.[PipelineId] = 4;
GO
INSERT INTO [procfwk].[PipelineAuthLink] ([PipelineId], [OrchestratorId], [CredentialId]) VALUES
    (NULL, 1, 1), (2, 1, 2), (4, 1, 3);
GO

-- Two earlier executions, archived (the second with the intentional error and its ErrorLog row).
INSERT INTO [procfwk].[ExecutionLog] ([LocalExecutionId], [StageId], [PipelineId], [CallingOrchestratorName], [ResourceGroupName],
    [OrchestratorType], [OrchestratorName], [PipelineName], [StartDateTime], [PipelineStatus], [EndDateTime], [PipelineRunId], [PipelineParamsUsed])
SELECT '5e0c0a11-0000-4000-8000-000000000001', p.[StageId], p.[PipelineId], N'FrameworkFactory', o.[ResourceGroupName],
       o.[OrchestratorType], o.[OrchestratorName], p.[PipelineName], '2026-11-29 01:00:00', 'Success', '2026-11-29 01:07:00',
       NEWID(), N'{ "pipelineParameters": {} }'
FROM [procfwk].[Pipelines] p INNER JOIN [procfwk].[Orchestrators] o ON o.[OrchestratorId] = p.[OrchestratorId]
INNER JOIN [procfwk].[Stages] s ON s.[StageId] = p.[StageId]
WHERE p.[Enabled] = 1 AND s.[Enabled] = 1 AND p.[PipelineName] <> N'Intentional Error';
INSERT INTO [procfwk].[ExecutionLog] ([LocalExecutionId], [StageId], [PipelineId], [CallingOrchestratorName], [ResourceGroupName],
    [OrchestratorType], [OrchestratorName], [PipelineName], [StartDateTime], [PipelineStatus], [EndDateTime], [PipelineRunId], [PipelineParamsUsed])
SELECT '5e0c0a11-0000-4000-8000-000000000002', p.[StageId], p.[PipelineId], N'FrameworkFactory', o.[ResourceGroupName],
       o.[OrchestratorType], o.[OrchestratorName], p.[PipelineName], '2026-11-30 01:00:00',
       CASE WHEN p.[PipelineName] = N'Intentional Error' THEN 'Failed' ELSE 'Success' END, '2026-11-30 01:09:00',
       CASE WHEN p.[PipelineName] = N'Intentional Error' THEN '7a7a7a7a-0000-4000-8000-000000000003' ELSE NEWID() END,
       N'{ "pipelineParameters": {} }'
FROM [procfwk].[Pipelines] p INNER JOIN [procfwk].[Orchestrators] o ON o.[OrchestratorId] = p.[OrchestratorId]
INNER JOIN [procfwk].[Stages] s ON s.[StageId] = p.[StageId]
WHERE p.[Enabled] = 1 AND s.[Enabled] = 1 AND s.[StageId] = 1;
INSERT INTO [procfwk].[ErrorLog] ([LocalExecutionId], [PipelineRunId], [ActivityRunId], [ActivityName], [ActivityType], [ErrorCode], [ErrorType], [ErrorMessage])
VALUES ('5e0c0a11-0000-4000-8000-000000000002', '7a7a7a7a-0000-4000-8000-000000000003', '7a7a7a7a-0000-4000-8000-000000000004',
        'Raise Errors or Not', 'IfCondition', '2000', 'UserError', N'The intentional error.');
INSERT INTO [procfwk].[BatchExecution] ([BatchId], [ExecutionId], [BatchName], [BatchStatus], [StartDateTime], [EndDateTime])
VALUES ('0a1b2c3d-0000-4000-8000-000000000001', '5e0c0a11-0000-4000-8000-000000000001', 'Daily', 'Success', '2026-11-29 01:00:00', '2026-11-29 01:07:00');
GO
