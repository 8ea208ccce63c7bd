"""Operations: keeping the appliance itself in shape. Retention of the event, delivery
and notification logs, and the dashboard's metrics of running instances, API requests
and spend over time.
"""
