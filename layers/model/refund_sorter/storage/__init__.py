"""Where photos and Results live: boto3 clients (:mod:`.clients`), the photo bucket (:mod:`.bucket`), the
Result store port (:mod:`.base`) and its DynamoDB implementation (:mod:`.dynamodb`), and the CSV export
(:mod:`.export`)."""
