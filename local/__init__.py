"""Run the SAM application on one machine with no AWS account and no Docker.

The functions run from their ``sam build`` output under the real Lambda runtime interface client
(``awslambdaric``) against a Runtime API emulator, one long-lived process per container; moto
stands in for S3, DynamoDB and SQS, created from the template's own resources. Why and how:
docs/local-lambda.md. Entry points: ``python -m local.invoke`` (``make invoke``) and
``python -m local.run`` (``make run``).
"""
